//! Streaming shards into shuffled, augmented batches for training.
//!
//! [`Loader`] concatenates datasets into one global index, plans each epoch deterministically
//! ([`plan`]: seeded permutation, rank split; [`augment`]: seeded flips and optional crops and
//! colour changes), decodes batches on `workers`
//! threads ([`decode`]; payloads through [`codec`]) and yields them in plan order through a
//! bounded prefetch queue. Batches are plain RGB8 NHWC bytes ([`Batch`]); the trainer normalises
//! on the device.
//!
//! The loader is its own crate, between the format and the trainer: it needs image codecs but
//! no libtorch, so `verify-shard --decode`, embedding, benchmarks and a Python binding (numpy
//! batches) can use it without a network.
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use facekit_data::{Loader, LoaderConfig};
//! # use facekit_shard::Dataset;
//! # fn main() -> anyhow::Result<()> {
//! let ds = Arc::new(Dataset::open_name("training/celeb", None)?);
//! let loader = Loader::new(vec![ds], LoaderConfig { batch_size: 256, ..Default::default() })?;
//! for batch in loader.epoch(0, 0) {
//!     let batch = batch?;
//!     assert_eq!(batch.images.len(), batch.n * 112 * 112 * 3);
//! }
//! # Ok(()) }
//! ```

pub mod augment;
pub mod codec;
pub mod batch;
pub mod config;
pub mod decode;
pub mod loader;
pub mod plan;

pub use augment::{Augment, View};
pub use batch::Batch;
pub use config::{LoaderConfig, MAX_PREFETCH_BYTES, MAX_WORKERS};
pub use decode::{decode_record, RecordDecoder};
pub use loader::{CorruptRecord, EpochIter, Loader, LoaderStats};
pub use plan::EpochPlan;
