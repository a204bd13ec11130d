//! Streaming shards into shuffled, augmented batches for training.
//!
//! The loader is a row of named stages, each a module with small types of its own:
//!
//! 1. **order** ([`order`], over [`pages`]): the epoch's sequence of records for all ranks, a pure
//!    function of (records, seed, epoch): [`Order::Global`], one seeded permutation, or
//!    [`Order::QuasiRandom`], pages shuffled and records drawn from a window of open pages, for
//!    data larger than memory.
//! 2. **plan** ([`plan`]): this rank's share, cut into batches, and each record's augmentation
//!    ([`augment`]: seeded flips and optional crops and colour changes). The same for every
//!    order: ranks are disjoint and cover the epoch, and a global batch does not depend on the
//!    number of ranks.
//! 3. **fetch** ([`fetch`]): the records' bytes through the shards' memory maps, as the page cache
//!    has them ([`Fetch::Mapped`]) or read ahead page by page and dropped once passed
//!    ([`Fetch::ReadAhead`]).
//! 4. **decode and augment** ([`decode`], JPEG through libjpeg-turbo, the rest through [`codec`]):
//!    `workers` threads decode each image straight into its place in a batch slot and flip and
//!    recolour it there while it is still in the core's cache ([`augment::apply_view`]);
//! 5. **the ring of batch slots** ([`ring`]): batch memory allocated once by an allocator the caller
//!    supplies ([`HostAlloc`], or pinned memory from the trainer), yielded inside a [`Batch`]
//!    (plain RGB8 NHWC bytes; the trainer normalises on the device) in plan order through a
//!    bounded prefetch queue, and given back when the batch is dropped.
//!
//! Errors are values ([`Error`]); one about a record names its shard, record and byte offset.
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
pub mod batch;
pub mod codec;
pub mod config;
pub mod decode;
pub mod error;
pub mod fetch;
mod jpeg;
pub mod loader;
pub mod order;
pub mod pages;
pub mod plan;
pub mod ring;

pub use augment::{Augment, View};
pub use batch::Batch;
pub use config::{LoaderConfig, DEFAULT_PAGE_BYTES, MAX_PREFETCH_BYTES, MAX_WORKERS};
pub use decode::{decode_record, RecordDecoder};
pub use error::{DecodeError, Error, Problem, RecordError, Result};
pub use fetch::{Fetch, PageSchedule};
pub use loader::{CorruptRecord, EpochIter, Loader, LoaderStats};
pub use order::Order;
pub use pages::{Page, Pages};
pub use plan::EpochPlan;
pub use ring::{HostAlloc, HostMemory, Slot, SlotAlloc, SlotMemory, SlotStats, SLOT_ALIGN};
