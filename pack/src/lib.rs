//! Packing identity folders of raw photos into aligned, checksummed shards (`facekit pack`).
//!
//! The pipeline, one module per stage:
//! - [`photo`]: decoding untrusted image files into RGB (format by bytes, EXIF, bombs, damage);
//! - [`align`]: 5-point similarity alignment in pure Rust, pixel-identical to dlib's
//!   `get_face_chip`, and face detection through dlib behind the [`align::dlib`] facade
//!   (feature `dlib`);
//! - [`layout`] decides sources, identities and class ids; [`inputs`] streams every file in one
//!   sorted order; [`worker`] turns one file into a record or a [`RejectReason`] ([`landmarks`],
//!   [`attributes`] supply known points and labels; [`encode`] writes the payload);
//! - [`pipeline`]: the one resumable, parallel, ordered pipeline every way of making a dataset
//!   runs on: items processed on worker threads, written in input order into the training or
//!   validation dataset, a checkpoint after every training shard ([`pipeline::Progress`]),
//!   rejects listed as they happen ([`rejects`]), events for the caller instead of prints
//!   ([`pipeline::Event`]); a finished dataset is replaced only by `--overwrite` and only once
//!   its successor is complete ([`replace`]);
//! - [`run`] (the entry point, [`pack`]): the photos as the pipeline's source, with the
//!   training/validation split ([`split`]), the settings and input fingerprint ([`checkpoint`])
//!   and the counts ([`report`]).
//!
//! [`rec`] imports MXNet RecordIO files (insightface's training sets) as another source of the
//! same pipeline, without detection, and exports datasets back to that format. [`chips`] cuts
//! faces from new photos as a dataset's were (the photos of a verification `.bin`).
//!
//! Because the order never depends on thread timing, the shards are byte-identical for any
//! `--threads`, and a resumed pack equals an uninterrupted one.

pub mod align;
pub mod attributes;
pub mod checkpoint;
pub mod chips;
pub mod curate;
pub mod encode;
mod inputs;
pub mod landmarks;
mod layout;
pub mod part;
pub mod photo;
pub mod pipeline;
mod reason;
pub mod rec;
mod rejects;
mod replace;
mod report;
mod run;
pub mod size;
pub mod split;
mod worker;

pub use reason::RejectReason;
pub use report::{Counters, PackReport, Reject, SourceCounts};
pub use run::{pack, PackEnd, PackOptions, VALID_SUFFIX};
