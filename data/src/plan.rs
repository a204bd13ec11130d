//! The order of one epoch: which records a rank sees, in which batches, and how each is augmented.
//!
//! Everything here is a pure function of (record count, seed, epoch, rank, world size, batch
//! size, drop_last), so a resumed run, or a run with another number of decode threads, sees
//! exactly the batches an uninterrupted run sees.
//!
//! Rank split: the epoch's permutation is first truncated to a multiple of `world_size`
//! (`world_size * batch_size` with `drop_last`), then rank `r` takes `perm[r], perm[r + N],
//! perm[r + 2N], ...`. Ranks are therefore disjoint, equally long, and together cover the
//! truncated permutation; the few records cut off differ from epoch to epoch when shuffling.

use super::augment::{Augment, View};
use super::LoaderConfig;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// One rank's view of one epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochPlan {
    /// Global record numbers in the order this rank consumes them.
    pub order: Vec<u64>,
    /// Images per full batch.
    pub batch_size: usize,
    /// Number of batches this rank yields in the epoch.
    pub batches: usize,
    /// Seed of the augmentation draws.
    seed: u64,
    /// The epoch number.
    epoch: u64,
    /// The augmentations in use.
    augment: Augment,
}

impl EpochPlan {
    /// Plans epoch `epoch` over `len` records for the rank described by `cfg`.
    pub fn new(len: u64, cfg: &LoaderConfig, epoch: u64) -> Self {
        let mut perm: Vec<u64> = (0..len).collect();
        if cfg.shuffle {
            // The epoch selects a ChaCha stream: permutations of different epochs are independent
            // and any epoch can be produced without replaying the ones before it.
            let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
            rng.set_stream(epoch);
            perm.shuffle(&mut rng);
        }
        let world = cfg.world_size as u64;
        let unit = if cfg.drop_last { world * cfg.batch_size as u64 } else { world };
        let usable = len - len % unit;
        let order: Vec<u64> = perm[..usable as usize]
            .iter()
            .copied()
            .skip(cfg.rank)
            .step_by(cfg.world_size)
            .collect();
        let batches = if cfg.drop_last { order.len() / cfg.batch_size } else { order.len().div_ceil(cfg.batch_size) };
        EpochPlan { order, batch_size: cfg.batch_size, batches, seed: cfg.seed, epoch, augment: cfg.augment }
    }

    /// The positions in [`EpochPlan::order`] that make up batch `b`.
    pub fn batch_positions(&self, b: usize) -> std::ops::Range<usize> {
        let start = b * self.batch_size;
        start..(start + self.batch_size).min(self.order.len())
    }

    /// How global record `index` is augmented in this epoch (see [`super::augment`]: keyed
    /// hashes, so the answer cannot depend on which thread decodes it).
    pub fn view(&self, index: u64) -> View {
        self.augment.draw(self.seed, self.epoch, index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(world: usize, rank: usize, batch: usize, drop_last: bool) -> LoaderConfig {
        LoaderConfig { batch_size: batch, world_size: world, rank, drop_last, seed: 7, ..LoaderConfig::default() }
    }

    #[test]
    fn ranks_are_equal_length_disjoint_and_cover_the_truncated_epoch() {
        for drop_last in [false, true] {
            let plans: Vec<_> = (0..3).map(|r| EpochPlan::new(100, &cfg(3, r, 8, drop_last), 5)).collect();
            let mut all: Vec<u64> = plans.iter().flat_map(|p| p.order.clone()).collect();
            let n = all.len();
            assert!(plans.iter().all(|p| p.order.len() == plans[0].order.len()));
            assert!(plans.iter().all(|p| p.batches == plans[0].batches));
            all.sort();
            all.dedup();
            assert_eq!(all.len(), n, "ranks overlap");
            assert_eq!(n, if drop_last { 96 } else { 99 });
        }
    }

    #[test]
    fn unshuffled_single_rank_keeps_stored_order() {
        let c = LoaderConfig { shuffle: false, ..cfg(1, 0, 4, false) };
        let p = EpochPlan::new(10, &c, 3);
        assert_eq!(p.order, (0..10).collect::<Vec<_>>());
        assert_eq!(p.batches, 3);
        assert_eq!(p.batch_positions(2), 8..10);
    }
}
