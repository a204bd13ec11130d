//! The loader's stages over datasets packed from real LFW photos: both orders keep rank sharding,
//! resume (also on another number of ranks), determinism for any thread count and
//! `skip_corrupt`; the quasi-random order keeps its window; read-ahead yields the same batches
//! and drops what it has passed; batches live in slots the caller's allocator made once.

use crate::loader::{all, cfg, copy_of_the_set, corrupted_copy, indices, jpeg_set};
use facekit_data::{Batch, Error, Fetch, HostMemory, Loader, LoaderConfig, Order, Pages, Slot, SlotAlloc, SlotMemory};
use facekit_shard::Dataset;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Small pages (one or two 64x64 records each) and a window of 3, so that the test set of 60
/// records spans about 35 pages.
const QUASI: Order = Order::QuasiRandom { window: 3 };
const PAGE: u64 = 4096;

fn with(order: Order, c: LoaderConfig) -> LoaderConfig {
    LoaderConfig { order, page_bytes: PAGE, ..c }
}

fn loader(c: LoaderConfig) -> Loader {
    Loader::new(vec![jpeg_set()], c).unwrap()
}

#[test]
fn the_quasi_random_ranks_are_disjoint_and_cover_the_epoch_for_1_2_3_and_5_ranks() {
    let ds = jpeg_set();
    assert!(loader(with(QUASI, cfg(4, 1))).pages().pages().len() > 20, "the test set should span many pages");
    for world in [1, 2, 3, 5] {
        let shares: Vec<Vec<u64>> = (0..world)
            .map(|rank| {
                indices(&all(&loader(with(QUASI, LoaderConfig { rank, world_size: world, ..cfg(4, 1) })), 1, 0))
            })
            .collect();
        assert!(shares.iter().all(|s| s.len() == shares[0].len()), "{world} ranks: shares differ in length");
        let union: BTreeSet<u64> = shares.iter().flatten().copied().collect();
        assert_eq!(union.len(), shares.iter().map(Vec::len).sum::<usize>(), "{world} ranks overlap");
        assert_eq!(union.len(), ds.len() - ds.len() % world, "{world} ranks do not cover the epoch");
    }
}

#[test]
fn the_quasi_random_order_is_a_pure_function_of_seed_and_epoch() {
    let a = all(&loader(with(QUASI, cfg(8, 2))), 3, 0);
    assert_eq!(a, all(&loader(with(QUASI, cfg(8, 2))), 3, 0));
    assert_ne!(indices(&a), indices(&all(&loader(with(QUASI, cfg(8, 2))), 4, 0)));
    assert_ne!(indices(&a), indices(&all(&loader(with(QUASI, LoaderConfig { seed: 43, ..cfg(8, 2) })), 3, 0)));
    assert_ne!(indices(&a), indices(&all(&loader(with(Order::Global, cfg(8, 2))), 3, 0)));
}

#[test]
fn the_quasi_random_epoch_never_draws_from_more_than_window_pages_at_once() {
    let l = loader(with(QUASI, cfg(8, 1)));
    let seq = indices(&all(&l, 2, 0));
    let pages: &Pages = l.pages();
    let mut span = vec![(usize::MAX, 0); pages.pages().len()];
    for (i, &g) in seq.iter().enumerate() {
        let s = &mut span[pages.page_of(g)];
        *s = (s.0.min(i), i);
    }
    let most = (0..seq.len()).map(|i| span.iter().filter(|(a, b)| *a <= i && i <= *b).count()).max().unwrap();
    assert_eq!(most, 3, "pages open at once");
    // The global order, for contrast, has pages open from the first batch to the last.
    let global = indices(&all(&loader(with(Order::Global, cfg(8, 1))), 2, 0));
    let first_half: BTreeSet<usize> = global[..30].iter().map(|&g| pages.page_of(g)).collect();
    assert!(first_half.len() > 15, "{} pages in the global order's first 30 records", first_half.len());
}

#[test]
fn resuming_at_any_batch_gives_the_uninterrupted_batches_under_both_orders() {
    for order in [Order::Global, QUASI] {
        let l = loader(with(order, cfg(6, 2)));
        let full = all(&l, 5, 0);
        for b in 0..=full.len() {
            assert_eq!(all(&l, 5, b as u64), &full[b..], "{order:?}: resumed at batch {b}");
        }
    }
}

#[test]
fn a_run_resumed_on_another_number_of_ranks_continues_with_the_same_global_batches_under_both_orders() {
    // A global batch of 12: 2 ranks x 6 or 3 ranks x 4, as the trainer rescales on resume.
    let global_batches = |order, world: usize, start| -> Vec<BTreeSet<u64>> {
        let per_rank: Vec<Vec<Batch>> = (0..world)
            .map(|rank| {
                let c = LoaderConfig { rank, world_size: world, drop_last: true, ..cfg(12 / world, 2) };
                all(&loader(with(order, c)), 7, start)
            })
            .collect();
        (0..per_rank[0].len()).map(|b| per_rank.iter().flat_map(|r| r[b].indices.clone()).collect()).collect()
    };
    for order in [Order::Global, QUASI] {
        let on_two = global_batches(order, 2, 0);
        assert_eq!(on_two.len(), 5);
        assert_eq!(global_batches(order, 3, 0), on_two, "{order:?}");
        // Stopped on 2 ranks after 2 batches, resumed on 3.
        assert_eq!(global_batches(order, 3, 2), &on_two[2..], "{order:?}");
    }
}

#[test]
fn batches_are_the_same_for_0_1_2_and_4_threads_under_both_orders() {
    for order in [Order::Global, QUASI] {
        let reference = all(&loader(with(order, cfg(5, 0))), 2, 0);
        for workers in [1, 2, 4] {
            assert_eq!(all(&loader(with(order, cfg(5, workers))), 2, 0), reference, "{order:?}, {workers} threads");
        }
    }
}

#[test]
fn skip_corrupt_counts_the_record_and_fills_the_batch_deterministically_under_both_orders() {
    let dir = tempfile::tempdir().unwrap();
    let (ds, shard_name, bad, offset) = corrupted_copy(dir.path(), 1, 2);
    for order in [Order::Global, QUASI] {
        for fetch in [Fetch::Mapped, Fetch::READ_AHEAD] {
            if fetch != Fetch::Mapped && order == Order::Global {
                continue; // refused: see read_ahead_under_the_shuffled_global_order_is_refused
            }
            let c = LoaderConfig { skip_corrupt: true, fetch, ..with(order, cfg(8, 2)) };
            let l = Loader::new(vec![ds.clone()], c.clone()).unwrap();
            let mut it = l.epoch(0, 0);
            let batches: Vec<Batch> = it.by_ref().collect::<facekit_data::Result<_>>().unwrap();
            let stats = it.stats().clone();
            assert_eq!(stats.corrupt_skipped, 1, "{order:?}");
            let r = &stats.corrupt[0].record;
            assert!(
                r.shard.ends_with(&shard_name) && (r.index, r.record, r.offset) == (bad, 2, offset),
                "{order:?}: {r:?}"
            );
            let seen = indices(&batches);
            assert_eq!(seen.len(), ds.len(), "{order:?}: batches must stay full");
            assert!(!seen.contains(&bad));
            let single = all(&Loader::new(vec![ds.clone()], LoaderConfig { workers: 0, ..c }).unwrap(), 0, 0);
            assert_eq!(batches, single, "{order:?} {fetch:?}");
        }
    }
}

#[test]
fn read_ahead_yields_the_batches_of_the_memory_map() {
    for order in [QUASI, Order::Global] {
        let shuffle = order != Order::Global;
        let mapped = all(&loader(with(order, LoaderConfig { shuffle, ..cfg(7, 2) })), 1, 0);
        let ahead = all(
            &loader(with(order, LoaderConfig { shuffle, fetch: Fetch::ReadAhead { batches: 1 }, ..cfg(7, 2) })),
            1,
            0,
        );
        assert_eq!(ahead, mapped, "{order:?}");
    }
}

#[test]
fn read_ahead_under_the_shuffled_global_order_and_a_window_of_nothing_are_refused() {
    let refused = |c: LoaderConfig| match Loader::new(vec![jpeg_set()], c) {
        Err(Error::Config(m)) => m,
        other => panic!("expected a configuration error, got {:?}", other.err()),
    };
    assert!(refused(with(Order::Global, LoaderConfig { fetch: Fetch::READ_AHEAD, ..cfg(4, 1) })).contains("read-ahead"));
    assert!(refused(with(Order::QuasiRandom { window: 0 }, cfg(4, 1))).contains("window"));
    assert!(refused(with(QUASI, LoaderConfig { shuffle: false, ..cfg(4, 1) })).contains("shuffles"));
    assert!(refused(LoaderConfig { page_bytes: 512, ..with(QUASI, cfg(4, 1)) }).contains("512 bytes"));
}

/// The fraction of the OS pages of a shard's records that are in the page cache.
fn resident_fraction(shard: &facekit_shard::ShardReader) -> f64 {
    let page = 4096usize;
    let bytes = shard.bytes();
    let (start, end) = (page, shard.footer().index_offset as usize / page * page); // whole OS pages of records only
    let mut vec = vec![0u8; (end - start) / page];
    // SAFETY: the range lies inside the shard's mapping; mincore only reports on it.
    let rc = unsafe { libc::mincore(bytes.as_ptr().add(start) as *mut libc::c_void, end - start, vec.as_mut_ptr()) };
    assert_eq!(rc, 0, "mincore failed");
    vec.iter().filter(|&&v| v & 1 == 1).count() as f64 / vec.len() as f64
}

#[test]
fn read_ahead_drops_the_shards_it_has_passed_from_the_page_cache_where_the_memory_map_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let ds = Arc::new(Dataset::open(copy_of_the_set(dir.path())).unwrap());
    let shards = ds.shards();
    assert!(
        shards.len() >= 3 && shards[0].footer().index_offset > 4 * 4096,
        "the test needs several shards of several OS pages"
    );
    let resident: Vec<f64> = shards.iter().map(resident_fraction).collect();
    let stored = LoaderConfig { shuffle: false, page_bytes: 8192, ..cfg(4, 2) };
    let mapped = Loader::new(vec![ds.clone()], stored.clone()).unwrap();
    assert_eq!(indices(&all(&mapped, 1, 0)).len(), ds.len());
    assert!(
        shards.iter().all(|s| resident_fraction(s) > 0.9),
        "the memory map keeps what it read (before: {resident:?})"
    );

    // Stored order: once the batches holding shard 0 are yielded, shard 0 is gone and the last
    // shard, not yet reached, is still there.
    let ahead = Loader::new(vec![ds.clone()], LoaderConfig { fetch: Fetch::READ_AHEAD, ..stored }).unwrap();
    let mut it = ahead.epoch(1, 0);
    let past_shard0 = shards[0].len().div_ceil(4) + 1;
    let _first: Vec<Batch> = it.by_ref().take(past_shard0).collect::<facekit_data::Result<_>>().unwrap();
    let (first, last) = (resident_fraction(&shards[0]), resident_fraction(shards.last().unwrap()));
    assert!(
        first < 0.1 && last > 0.9,
        "after shard 0: {first:.2} of it and {last:.2} of the last shard in the page cache"
    );
    drop(it);

    // The quasi-random order over a whole epoch passes every shard.
    let quasi =
        Loader::new(vec![ds.clone()], LoaderConfig { fetch: Fetch::READ_AHEAD, ..with(QUASI, cfg(4, 2)) }).unwrap();
    assert_eq!(indices(&all(&mapped, 2, 0)).len(), ds.len());
    assert_eq!(indices(&all(&quasi, 2, 0)).len(), ds.len());
    let left: Vec<f64> = shards.iter().map(resident_fraction).collect();
    assert!(
        left.iter().all(|&f| f < 0.1),
        "read-ahead should drop every page it passed: {left:?} still in the page cache"
    );
}

/// Host memory marked as this test's, counting what it hands out.
#[derive(Default)]
struct Counting(AtomicUsize);

struct Marked(HostMemory);

impl SlotMemory for Marked {
    fn bytes(&self) -> &[u8] {
        self.0.bytes()
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        self.0.bytes_mut()
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl SlotAlloc for Counting {
    fn alloc(&self, len: usize) -> Result<Box<dyn SlotMemory>, String> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(Box::new(Marked(HostMemory::new(len)?)))
    }
}

#[test]
fn batches_live_in_slots_the_callers_allocator_made_once() {
    let alloc = Arc::new(Counting::default());
    let c = cfg(7, 2);
    let l = Loader::with_alloc(vec![jpeg_set()], c.clone(), alloc.clone()).unwrap();
    assert_eq!(alloc.0.load(Ordering::Relaxed), c.ring_slots(), "the ring is allocated up front");
    let reference = all(&loader(c.clone()), 0, 0);
    for epoch in 0..3 {
        for (b, batch) in l.epoch(epoch, 0).enumerate() {
            let batch = batch.unwrap();
            assert!(batch.images.is_from_ring() && batch.images.memory().as_any().downcast_ref::<Marked>().is_some());
            if epoch == 0 {
                assert_eq!(batch, reference[b]);
            }
        }
    }
    assert_eq!(
        alloc.0.load(Ordering::Relaxed),
        c.ring_slots(),
        "a consumer that drops each batch allocates nothing more"
    );
    // A consumer that keeps a whole epoch is not blocked: the ring grows, and says so.
    let kept = all(&l, 0, 0);
    assert_eq!(kept, reference);
    assert!(l.slot_stats().allocated > l.slot_stats().initial);
    let copy: Slot = kept[0].images.clone();
    assert!(!copy.is_from_ring() && copy == kept[0].images);
}
