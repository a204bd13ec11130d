//! The order stage: the sequence in which one epoch visits the records of all ranks together.
//! [`crate::plan`] then cuts it into global batches and deals each rank its share, the same way
//! for every order, so rank sharding, resume (also on another number of ranks) and determinism
//! are properties of the plan, not of each order.
//!
//! Every order is a pure function of (records and their pages, seed, epoch): the world size never
//! enters it, which is why a run resumes on another number of ranks with the same global
//! batches.

use super::pages::Pages;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Which order an epoch visits the records in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// One seeded permutation of all records (or stored order without shuffling): the most
    /// random order, for data that fits the page cache; out of core every record is a random
    /// disk read.
    #[default]
    Global,
    /// For data larger than memory (FFCV's quasi-random order, for any number of ranks): the
    /// pages ([`crate::pages`]) in a seeded order, at most `window` of them open at once, each
    /// record drawn at random from the records of the open pages; a page that runs out is
    /// replaced by the next. Disk reads are whole pages, each read once per epoch.
    QuasiRandom {
        /// Most pages open at once: memory is about `window x page_bytes`, and a batch mixes
        /// records of up to `window` pages (of identities stored near each other: keep it large).
        window: u32,
    },
}

impl Order {
    /// Whether the order needs the records' pages.
    pub(crate) fn uses_pages(&self) -> bool {
        matches!(self, Order::QuasiRandom { .. })
    }

    /// The epoch's sequence of global record numbers, every record once. `shuffle: false` keeps
    /// stored order (only [`Order::Global`] allows it: [`crate::LoaderConfig::validate`]).
    pub fn sequence(&self, pages: &Pages, shuffle: bool, seed: u64, epoch: u64) -> Vec<u64> {
        match *self {
            Order::Global => global(pages.records(), shuffle, seed, epoch),
            Order::QuasiRandom { window } => quasi_random(pages, window.max(1) as usize, seed, epoch),
        }
    }
}

/// A seeded permutation; the epoch selects a ChaCha stream, so permutations of different epochs
/// are independent and any epoch can be produced without replaying the ones before it.
fn global(len: u64, shuffle: bool, seed: u64, epoch: u64) -> Vec<u64> {
    let mut perm: Vec<u64> = (0..len).collect();
    if shuffle {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(epoch);
        perm.shuffle(&mut rng);
    }
    perm
}

/// Kept apart from the global order's seed, so that the two orders of one seed are unrelated.
const QUASI_RANDOM_SALT: u64 = 0x7175_6173_6972_616e;

/// Pages in a seeded order; a pool of the records of at most `window` open pages; each record
/// drawn uniformly from the pool, and a page's records joining the pool when it opens.
fn quasi_random(pages: &Pages, window: usize, seed: u64, epoch: u64) -> Vec<u64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ QUASI_RANDOM_SALT);
    rng.set_stream(epoch);
    let mut page_order: Vec<usize> = (0..pages.pages().len()).collect();
    page_order.shuffle(&mut rng);
    let mut next_page = page_order.into_iter();
    // The pool holds (record, slot of its page in `left`); `left` counts each open page's
    // records still in the pool, and its free entries are reused.
    let mut pool: Vec<(u64, usize)> = Vec::new();
    let mut left: Vec<u32> = Vec::new();
    let mut free_slots: Vec<usize> = Vec::new();
    let mut open = 0;
    let mut out = Vec::with_capacity(pages.records() as usize);
    loop {
        while open < window {
            let Some(p) = next_page.next() else { break };
            let page = &pages.pages()[p];
            let slot = free_slots.pop().unwrap_or_else(|| {
                left.push(0);
                left.len() - 1
            });
            left[slot] = page.count;
            pool.extend(page.records().map(|g| (g, slot)));
            open += 1;
        }
        if pool.is_empty() {
            return out;
        }
        let (g, slot) = pool.swap_remove(rng.random_range(0..pool.len()));
        out.push(g);
        left[slot] -= 1;
        if left[slot] == 0 {
            free_slots.push(slot);
            open -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1,000 records in shards of 300, pages of 7 or 8 records (records of 130 bytes, pages of 1 KiB).
    fn pages() -> Pages {
        let shards: Vec<Vec<(u64, u32)>> =
            [300, 300, 300, 100].iter().map(|&n| (0..n).map(|i| (48 + 130 * i, 130)).collect()).collect();
        Pages::new(shards.into_iter().enumerate().map(|(s, r)| (0, s, r)), 1024)
    }

    #[test]
    fn the_global_order_is_the_seeded_permutation_it_always_was() {
        // The first records of epoch 3, seed 42, over 60 records, as the loader drew them before
        // the order became a stage of its own: resumed runs depend on them.
        let p = Pages::new([(0, 0, (0..60).map(|i| (48 + 100 * i, 100)))], 1 << 20);
        let seq = Order::Global.sequence(&p, true, 42, 3);
        assert_eq!(&seq[..12], &GOLDEN_GLOBAL_42_3);
        assert_eq!(Order::Global.sequence(&p, false, 42, 3), (0..60).collect::<Vec<_>>());
    }

    const GOLDEN_GLOBAL_42_3: [u64; 12] = [8, 27, 29, 12, 0, 48, 18, 54, 53, 21, 51, 57];

    #[test]
    fn quasi_random_visits_every_record_once_and_depends_only_on_seed_and_epoch() {
        let p = pages();
        let order = Order::QuasiRandom { window: 4 };
        let a = order.sequence(&p, true, 9, 2);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
        assert_eq!(a, order.sequence(&p, true, 9, 2));
        assert_ne!(a, order.sequence(&p, true, 9, 3));
        assert_ne!(a, order.sequence(&p, true, 10, 2));
        assert_ne!(a, Order::Global.sequence(&p, true, 9, 2));
    }

    #[test]
    fn quasi_random_never_has_more_than_window_pages_open() {
        let p = pages();
        for window in [1, 3, 8] {
            let seq = Order::QuasiRandom { window }.sequence(&p, true, 1, 0);
            // A page is open from its first record drawn to its last.
            let mut span = vec![(usize::MAX, 0); p.pages().len()];
            for (i, &g) in seq.iter().enumerate() {
                let s = &mut span[p.page_of(g)];
                *s = (s.0.min(i), i);
            }
            let most = (0..seq.len()).map(|i| span.iter().filter(|(a, b)| *a <= i && i <= *b).count()).max().unwrap();
            assert_eq!(most, window as usize, "window {window}");
            // And records are not in stored order within a page once two pages are open.
            let in_order = seq.windows(2).filter(|w| w[1] == w[0] + 1).count();
            assert!(window == 1 || in_order < 200, "window {window}: {in_order} records follow their neighbour");
        }
    }
}
