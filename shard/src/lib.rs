//! The facekit dataset format: datasets of checksummed, indexed records (`docs/FORMAT.md`).
//!
//! A dataset `training/celeb` is a manifest (`celeb.manifest.json`), a label map
//! (`celeb.labels.tsv`) and shards (`celeb-00000.shard`, ...):
//! - [`format`]: the fixed layouts (header, record header, index entry, footer), each
//!   validating itself;
//! - [`record`]: a record and its [`Labels`], decoded from a header in one place;
//! - [`manifest`]: the manifest, the label map and the names of a dataset's files;
//! - [`writer`] and [`reader`]: writing and reading, separately;
//! - [`verify`]: checking every byte of a dataset, every problem reported.
//!
//! This crate knows no image codec, no dlib and no libtorch, so that a Python binding or a
//! third-party reader can depend on it alone; payloads are bytes (a caller can hand
//! [`verify`] a decoder to check them).

pub mod error;
pub mod format;
pub mod manifest;
pub mod reader;
pub mod record;
pub mod verify;
pub mod writer;

pub use error::{Error, Result, ShardError};
pub use format::{Encoding, Gender};
pub use manifest::{DatasetPaths, LabelMap, Manifest};
pub use reader::{Dataset, RecordView, ShardReader};
pub use record::{Labels, Record};
pub use writer::{DatasetWriter, ShardWriter};
