//! The loader's settings.

use super::augment::Augment;
use anyhow::{bail, Result};

/// Most decode threads one loader starts.
pub const MAX_WORKERS: usize = 256;
/// Most memory the batches decoded ahead may take, in bytes (16 GiB).
pub const MAX_PREFETCH_BYTES: u64 = 16 << 30;

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
    /// Shuffle the records with a seeded permutation every epoch (otherwise stored order).
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
        }
    }
}

impl LoaderConfig {
    /// Checks the settings against each other.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            bail!("batch size must be at least 1");
        }
        if self.image_size == 0 || self.image_size > 4096 {
            bail!("image size {} is out of range (1..=4096)", self.image_size);
        }
        if self.world_size == 0 {
            bail!("world size must be at least 1");
        }
        if self.rank >= self.world_size {
            bail!("rank {} is not below world size {}", self.rank, self.world_size);
        }
        if self.workers > MAX_WORKERS {
            bail!("{} decode workers asked for; at most {MAX_WORKERS} are allowed (one or two per core is plenty)", self.workers);
        }
        let batch_bytes = (self.batch_size as u64).saturating_mul(u64::from(self.image_size).pow(2) * 3);
        let queued = batch_bytes.saturating_mul(self.effective_prefetch() as u64);
        if queued > MAX_PREFETCH_BYTES {
            bail!(
                "{} batches of {} images of {}x{} decoded ahead would take {} GiB, more than the loader's {} GiB: \
                 use fewer workers or a smaller batch",
                self.effective_prefetch(),
                self.batch_size,
                self.image_size,
                self.image_size,
                queued >> 30,
                MAX_PREFETCH_BYTES >> 30
            );
        }
        self.augment.validate()?;
        Ok(())
    }

    /// Batches decoded ahead, after raising it to the number of workers.
    pub fn effective_prefetch(&self) -> usize {
        self.prefetch.max(self.workers).max(1)
    }
}
