//! The loader's settings.

use super::augment::Augment;
use super::error::{Error, Result};
use super::{Fetch, Order};

/// Most decode threads one loader starts.
pub const MAX_WORKERS: usize = 256;
/// Most memory the batches decoded ahead may take, in bytes (16 GiB).
pub const MAX_PREFETCH_BYTES: u64 = 16 << 30;
/// Slots of the ring beyond the batches decoded ahead: the one the consumer holds and one it
/// has not yet given back (FFCV's `batches_ahead + 2`).
pub(crate) const RING_SPARE: usize = 2;
/// Default page size of the quasi-random order and the read-ahead (FFCV's).
pub const DEFAULT_PAGE_BYTES: u64 = 8 << 20;
/// Smallest page: one OS page, the unit the kernel reads and drops.
pub(crate) const MIN_PAGE_BYTES: u64 = 4096;

/// How a [`super::Loader`] turns records into batches.
#[derive(Debug, Clone, PartialEq)]
pub struct LoaderConfig {
    /// Images per batch (per rank).
    pub batch_size: usize,
    /// Output side in pixels; records of another size are resized (antialiased triangle filter, PIL's BILINEAR; SIMD).
    pub image_size: u32,
    /// Decode threads; 0 decodes on the calling thread.
    pub workers: usize,
    /// Batches decoded ahead of the consumer; memory is bounded by `prefetch` batches.
    /// Values below `workers` are raised to `workers`, otherwise some workers could never run.
    pub prefetch: usize,
    /// Shuffle every epoch as `order` says; `false` reads in stored order (global order only).
    pub shuffle: bool,
    /// Seed of the shuffle and of the augmentation draws.
    pub seed: u64,
    /// Flip (on by default) and optional crop, colour jitter and greyscale, drawn per record.
    pub augment: Augment,
    /// This process's rank among `world_size` data-parallel processes.
    pub rank: usize,
    /// Number of data-parallel processes sharing each epoch.
    pub world_size: usize,
    /// Drop the last, incomplete batch of each epoch.
    pub drop_last: bool,
    /// Count and skip corrupt or undecodable records instead of failing.
    pub skip_corrupt: bool,
    /// The order an epoch visits the records in ([`Order::Global`] by default).
    pub order: Order,
    /// How record bytes reach the decoders ([`Fetch::Mapped`] by default).
    pub fetch: Fetch,
    /// Bytes per page ([`crate::pages`]), the unit of the quasi-random order and of the read-ahead.
    pub page_bytes: u64,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        LoaderConfig {
            batch_size: 128,
            image_size: 112,
            workers: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            prefetch: 4,
            shuffle: true,
            seed: 0,
            augment: Augment::default(),
            rank: 0,
            world_size: 1,
            drop_last: true,
            skip_corrupt: false,
            order: Order::Global,
            fetch: Fetch::Mapped,
            page_bytes: DEFAULT_PAGE_BYTES,
        }
    }
}

impl LoaderConfig {
    /// Checks the settings against each other.
    pub fn validate(&self) -> Result<()> {
        let refuse = |what: String| Err(Error::Config(what));
        if self.batch_size == 0 {
            return refuse("batch size must be at least 1".into());
        }
        if self.image_size == 0 || self.image_size > 4096 {
            return refuse(format!("image size {} is out of range (1..=4096)", self.image_size));
        }
        if self.world_size == 0 {
            return refuse("world size must be at least 1".into());
        }
        if self.rank >= self.world_size {
            return refuse(format!("rank {} is not below world size {}", self.rank, self.world_size));
        }
        if self.workers > MAX_WORKERS {
            return refuse(format!(
                "{} decode workers asked for; at most {MAX_WORKERS} are allowed (one or two per core is plenty)",
                self.workers
            ));
        }
        self.validate_stages()?;
        let batch_bytes = (self.batch_size as u64).saturating_mul(u64::from(self.image_size).pow(2) * 3);
        let queued = batch_bytes.saturating_mul(self.ring_slots() as u64);
        if queued > MAX_PREFETCH_BYTES {
            return refuse(format!(
                "{} batches of {} images of {}x{} decoded ahead would take {} GiB, more than the loader's {} GiB: \
                 use fewer workers or a smaller batch",
                self.ring_slots(),
                self.batch_size,
                self.image_size,
                self.image_size,
                queued >> 30,
                MAX_PREFETCH_BYTES >> 30
            ));
        }
        self.augment.validate()
    }

    /// Refuses order, fetch and page settings that cannot do what they promise.
    fn validate_stages(&self) -> Result<()> {
        let refuse = |what: String| Err(Error::Config(what));
        if let Order::QuasiRandom { window } = self.order {
            if window == 0 {
                return refuse("the quasi-random order needs a window of at least 1 page".into());
            }
            if !self.shuffle {
                return refuse(
                    "the quasi-random order shuffles: without shuffling, use the global order (stored order)".into(),
                );
            }
        }
        let pages_used = self.order.uses_pages() || self.fetch != Fetch::Mapped;
        if pages_used && self.page_bytes < MIN_PAGE_BYTES {
            return refuse(format!(
                "pages of {} bytes are smaller than one OS page ({MIN_PAGE_BYTES} bytes)",
                self.page_bytes
            ));
        }
        // Reading ahead pays only when the order reads pages in runs; under a shuffled global
        // order every page is needed from the first batch to the last, so nothing could be
        // dropped and the read-ahead would ask for the whole dataset at once.
        if matches!(self.fetch, Fetch::ReadAhead { .. }) && self.order == Order::Global && self.shuffle {
            return refuse(
                "read-ahead needs an order that reads pages in runs: the shuffled global order needs every page all epoch long; \
                 use the quasi-random order (or no shuffling)"
                    .into(),
            );
        }
        Ok(())
    }

    /// Slots of the ring made up front: the batches decoded ahead and [`RING_SPARE`].
    pub fn ring_slots(&self) -> usize {
        self.effective_prefetch() + RING_SPARE
    }

    /// Batches decoded ahead, after raising it to the number of workers.
    pub(crate) fn effective_prefetch(&self) -> usize {
        self.prefetch.max(self.workers).max(1)
    }
}
