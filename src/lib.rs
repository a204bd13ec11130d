//! facekit: from raw face photos to trained face-recognition networks.
//!
//! The modules follow the pipeline:
//! - [`shard`]: the on-disk dataset format (manifest, label map, checksummed indexed shards);
//! - [`image_io`]: decoding untrusted image files into RGB;
//! - [`align`]: face detection, 5-point landmarks and similarity alignment to a face chip;
//! - [`pack`]: walking identity folders and packing aligned faces into shards, in parallel;
//! - [`data`]: streaming shards into shuffled, augmented, normalised batches;
//! - [`model`], [`loss`], [`train`]: the network, its heads and losses, and the training loop;
//! - [`eval`]: verification metrics, embeddings and export;
//! - [`fsx`], [`lock`], [`signals`], [`atomic`]: reading untrusted paths within budgets, one
//!   writer per output, stop requests, atomic writes.

pub mod atomic;
pub mod cli;
pub mod fsx;
pub mod fuzz_entry;
pub mod lock;
pub mod signals;
pub mod plot;
pub mod progress;
pub mod shard;
pub mod image_io;
pub mod align;
pub mod pack;
pub mod data;
pub mod train;
pub mod eval;
#[cfg(feature = "train")]
pub mod model;
#[cfg(feature = "train")]
pub mod loss;
