//! The plan of one epoch for one rank: which records it sees, in which batches, and how each is
//! augmented.
//!
//! Everything here is a pure function of the epoch's sequence ([`crate::order`]: records, seed,
//! epoch) and of (rank, world size, batch size, drop_last), so a resumed run, or a run with
//! another number of decode threads, sees exactly the batches an uninterrupted run sees.
//!
//! Rank split, the same for every order: the sequence is first truncated to a multiple of
//! `world_size` (`world_size * batch_size` with `drop_last`), then rank `r` takes `seq[r],
//! seq[r + N], seq[r + 2N], ...`. Ranks are therefore disjoint, equally long, and together cover
//! the truncated sequence; the few records cut off differ from epoch to epoch when shuffling.
//! Batch `b` of every rank together is `seq[b * N * B .. (b + 1) * N * B]`, which does not depend
//! on `N` for a fixed global batch `N * B`: a run resumed on another number of ranks (keeping its
//! global batch) continues with the same global batches.

use super::augment::{Augment, View};
use super::LoaderConfig;

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
    /// Plans epoch `epoch` for the rank described by `cfg`, from the epoch's `sequence` of all
    /// ranks ([`crate::Order::sequence`]).
    pub fn new(sequence: Vec<u64>, cfg: &LoaderConfig, epoch: u64) -> Self {
        let usable = usable(sequence.len() as u64, cfg);
        let order: Vec<u64> =
            sequence[..usable as usize].iter().copied().skip(cfg.rank).step_by(cfg.world_size).collect();
        let batches = if cfg.drop_last { order.len() / cfg.batch_size } else { order.len().div_ceil(cfg.batch_size) };
        EpochPlan { order, batch_size: cfg.batch_size, batches, seed: cfg.seed, epoch, augment: cfg.augment }
    }

    /// Batches each rank yields per epoch over `len` records (the same for every epoch and order).
    pub(crate) fn batches_for(len: u64, cfg: &LoaderConfig) -> usize {
        let per_rank = (usable(len, cfg) / cfg.world_size as u64) as usize;
        if cfg.drop_last {
            per_rank / cfg.batch_size
        } else {
            per_rank.div_ceil(cfg.batch_size)
        }
    }

    /// The positions in [`EpochPlan::order`] that make up batch `b`.
    pub(crate) fn batch_positions(&self, b: usize) -> std::ops::Range<usize> {
        let start = b * self.batch_size;
        start..(start + self.batch_size).min(self.order.len())
    }

    /// How global record `index` is augmented in this epoch (see [`super::augment`]: keyed
    /// hashes, so the answer cannot depend on which thread decodes it).
    pub fn view(&self, index: u64) -> View {
        self.augment.draw(self.seed, self.epoch, index)
    }
}

/// The records of a sequence of `len` that the ranks share: a multiple of the world size, or of
/// the global batch with `drop_last`.
fn usable(len: u64, cfg: &LoaderConfig) -> u64 {
    let world = cfg.world_size as u64;
    let unit = if cfg.drop_last { world * cfg.batch_size as u64 } else { world };
    len - len % unit
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Order, Pages};

    /// The global order's sequence of `len` records (seed 7).
    fn seq(len: u64, epoch: u64, shuffle: bool) -> Vec<u64> {
        let pages = Pages::new([(0, 0, (0..len).map(|i| (48 + 10 * i, 10)))], 1 << 20);
        Order::Global.sequence(&pages, shuffle, 7, epoch)
    }

    fn cfg(world: usize, rank: usize, batch: usize, drop_last: bool) -> LoaderConfig {
        LoaderConfig { batch_size: batch, world_size: world, rank, drop_last, seed: 7, ..LoaderConfig::default() }
    }

    #[test]
    fn ranks_are_equal_length_disjoint_and_cover_the_truncated_epoch() {
        for drop_last in [false, true] {
            let plans: Vec<_> =
                (0..3).map(|r| EpochPlan::new(seq(100, 5, true), &cfg(3, r, 8, drop_last), 5)).collect();
            let mut all: Vec<u64> = plans.iter().flat_map(|p| p.order.clone()).collect();
            let n = all.len();
            assert!(plans.iter().all(|p| p.order.len() == plans[0].order.len()));
            assert!(plans
                .iter()
                .all(|p| p.batches == plans[0].batches
                    && p.batches == EpochPlan::batches_for(100, &cfg(3, 0, 8, drop_last))));
            all.sort();
            all.dedup();
            assert_eq!(all.len(), n, "ranks overlap");
            assert_eq!(n, if drop_last { 96 } else { 99 });
        }
    }

    #[test]
    fn unshuffled_single_rank_keeps_stored_order() {
        let c = LoaderConfig { shuffle: false, ..cfg(1, 0, 4, false) };
        let p = EpochPlan::new(seq(10, 3, false), &c, 3);
        assert_eq!(p.order, (0..10).collect::<Vec<_>>());
        assert_eq!(p.batches, 3);
        assert_eq!(p.batch_positions(2), 8..10);
    }
}
