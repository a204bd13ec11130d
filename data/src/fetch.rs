//! The fetch stage: how record bytes reach the decoders. Records are always read through the
//! shards' memory maps (no copy); what differs is who decides when the disk is read and when
//! memory is given back.
//!
//! - [`Fetch::Mapped`]: the page cache decides. A record is read when a decoder first touches it;
//!   nothing is dropped. Right for data that fits in memory, and the only sensible choice for
//!   the global order, whose next record can be anywhere.
//! - [`Fetch::ReadAhead`]: the epoch's plan decides. Each page ([`crate::pages`]) is requested
//!   as one read (`madvise(WILLNEED)`: the kernel reads it while earlier batches decode) a few
//!   batches before its first record is needed, and dropped (`MADV_DONTNEED` on this process's
//!   mapping, `POSIX_FADV_DONTNEED` on the page cache) once this rank has yielded the batch with
//!   its last record. Memory then holds the pages of the batches in flight, not the dataset.
//!   A record read again after its page was dropped (a `skip_corrupt` substitute) is simply read
//!   again from disk.

use super::pages::Pages;
use super::plan::EpochPlan;
use facekit_shard::Dataset;
use std::collections::BTreeMap;
use std::fs::File;
use std::ops::Range;
use std::sync::Arc;

/// How record bytes reach the decoders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fetch {
    /// Random access through the memory maps, read when first touched, never dropped.
    #[default]
    Mapped,
    /// Whole pages read ahead in the order the epoch first needs them and dropped once passed;
    /// for [`crate::Order::QuasiRandom`] (or stored order), out of core.
    ReadAhead {
        /// Batches beyond the ones handed to the decoders whose pages are requested.
        batches: u32,
    },
}

impl Fetch {
    /// Read-ahead with a look-ahead of two batches.
    pub const READ_AHEAD: Fetch = Fetch::ReadAhead { batches: 2 };
}

/// Which pages one rank's epoch opens and closes at each batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageSchedule {
    /// `opens[b]`: pages whose first record of this rank is in batch `b`.
    pub opens: Vec<Vec<usize>>,
    /// `closes[b]`: pages whose last record of this rank is in batch `b`.
    pub closes: Vec<Vec<usize>>,
}

impl PageSchedule {
    /// The schedule of `plan` over `pages`.
    pub fn new(plan: &EpochPlan, pages: &Pages) -> Self {
        let n = pages.pages().len();
        let (mut first, mut last) = (vec![usize::MAX; n], vec![0usize; n]);
        for b in 0..plan.batches {
            for &g in &plan.order[plan.batch_positions(b)] {
                let p = pages.page_of(g);
                first[p] = first[p].min(b);
                last[p] = b;
            }
        }
        let (mut opens, mut closes) = (vec![Vec::new(); plan.batches], vec![Vec::new(); plan.batches]);
        for p in (0..n).filter(|&p| first[p] != usize::MAX) {
            opens[first[p]].push(p);
            closes[last[p]].push(p);
        }
        PageSchedule { opens, closes }
    }

    /// Most pages held at once when the pages of `ahead` batches beyond the one being yielded
    /// have been requested.
    #[cfg(test)]
    pub(crate) fn most_held(&self, ahead: usize) -> usize {
        let count = |v: &[Vec<usize>]| v.iter().map(Vec::len).sum::<usize>();
        let n = self.opens.len();
        (0..n).map(|b| count(&self.opens[..(b + ahead + 1).min(n)]) - count(&self.closes[..b])).max().unwrap_or(0)
    }
}

/// The read-ahead of one rank's epoch: requests pages as batches are issued, drops them as
/// batches are yielded.
pub(crate) struct ReadAhead {
    schedule: PageSchedule,
    pages: Arc<Pages>,
    maps: Arc<ShardMaps>,
    look_ahead: usize,
    requested: usize,
    /// Byte ranges dropped so far, per (dataset, shard), merged.
    dropped: BTreeMap<(usize, usize), Runs>,
}

impl ReadAhead {
    pub(crate) fn new(plan: &EpochPlan, pages: Arc<Pages>, maps: Arc<ShardMaps>, look_ahead: u32) -> Self {
        let schedule = PageSchedule::new(plan, &pages);
        ReadAhead { schedule, pages, maps, look_ahead: look_ahead as usize, requested: 0, dropped: BTreeMap::new() }
    }

    /// Batch `b` goes to a decoder: request the pages of batches up to `b + look_ahead`.
    pub(crate) fn issued(&mut self, b: usize) {
        let until = (b + self.look_ahead + 1).min(self.schedule.opens.len());
        while self.requested < until {
            for &p in &self.schedule.opens[self.requested] {
                self.maps.will_need(&self.pages.pages()[p]);
            }
            self.requested += 1;
        }
    }

    /// Batch `b` was yielded: drop the pages it was the last to need.
    pub(crate) fn passed(&mut self, b: usize) {
        for &p in &self.schedule.closes[b] {
            let page = &self.pages.pages()[p];
            let run = self.dropped.entry((page.dataset, page.shard)).or_default().add(page.bytes.clone());
            self.maps.drop_page(page, run);
        }
    }
}

/// The shards' maps and files, for advice about their pages.
pub(crate) struct ShardMaps {
    datasets: Vec<Arc<Dataset>>,
    files: Vec<Vec<File>>,
}

impl ShardMaps {
    /// Opens every shard file once more (advice about the page cache needs a descriptor).
    pub(crate) fn open(datasets: &[Arc<Dataset>]) -> Result<Self, facekit_shard::Error> {
        let files = datasets
            .iter()
            .map(|d| {
                d.shards()
                    .iter()
                    .map(|s| facekit_io::bounded::open_regular(s.path()).map_err(facekit_shard::Error::from))
                    .collect()
            })
            .collect::<Result<_, _>>()?;
        Ok(ShardMaps { datasets: datasets.to_vec(), files })
    }

    fn will_need(&self, page: &super::pages::Page) {
        advice::will_need(self.datasets[page.dataset].shards()[page.shard].bytes(), page.bytes.clone());
    }

    /// Drops `page`, and from the page cache the `run` of dropped bytes around it: the page
    /// cache may hold a file in large folios, which it drops only when a request covers them
    /// whole. Once a shard's records are all dropped, so is the whole file, its index too (which
    /// the reader keeps a copy of).
    fn drop_page(&self, page: &super::pages::Page, run: Range<u64>) {
        let shard = &self.datasets[page.dataset].shards()[page.shard];
        let map = shard.bytes();
        let records = facekit_shard::format::HEADER_LEN as u64..shard.footer().index_offset;
        let file = &self.files[page.dataset][page.shard];
        if run.start <= records.start && run.end >= records.end {
            advice::drop_range(map, file, 0..map.len() as u64, 0..map.len() as u64);
        } else {
            advice::drop_range(map, file, page.bytes.clone(), run);
        }
    }
}

/// Disjoint byte ranges, merged as they are added.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Runs(Vec<Range<u64>>);

impl Runs {
    /// Adds `r` and returns the run that now holds it.
    fn add(&mut self, r: Range<u64>) -> Range<u64> {
        let i = self.0.partition_point(|x| x.end < r.start);
        let mut merged = r;
        let mut j = i;
        while j < self.0.len() && self.0[j].start <= merged.end {
            merged = merged.start.min(self.0[j].start)..merged.end.max(self.0[j].end);
            j += 1;
        }
        self.0.splice(i..j, [merged.clone()]);
        merged
    }
}

/// Advice to the kernel about ranges of a shard's map. Advice is a hint: a kernel that ignores
/// it (or a system without it) loads the same batches, only with other timing.
#[cfg(target_os = "linux")]
mod advice {
    use std::fs::File;
    use std::ops::Range;
    use std::os::fd::AsRawFd;

    fn os_page() -> usize {
        // SAFETY: sysconf has no preconditions.
        let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if n > 0 {
            n as usize
        } else {
            4096
        }
    }

    /// Asks the kernel to read `range` of the mapped file `map` now, asynchronously.
    pub(super) fn will_need(map: &[u8], range: Range<u64>) {
        let page = os_page();
        let start = (range.start as usize / page) * page;
        let end = (range.end as usize).min(map.len());
        if start < end {
            // SAFETY: the range lies inside the mapping (start is page-aligned because the map
            // is); WILLNEED changes no byte of it.
            unsafe { libc::madvise(map.as_ptr().add(start) as *mut libc::c_void, end - start, libc::MADV_WILLNEED) };
        }
    }

    /// Drops the OS pages of `zap` from this process's mapping and those of `evict` from the
    /// page cache (pages another process still maps stay cached). Starts are rounded down, ends
    /// too unless they reach the end of the file: the OS page that holds the end of one facekit
    /// page and the start of the next goes with the next (if the earlier page is still open
    /// then, its last record is read again).
    pub(super) fn drop_range(map: &[u8], file: &File, zap: Range<u64>, evict: Range<u64>) {
        let page = os_page();
        let start = |x: u64| (x as usize / page) * page;
        let end =
            |x: u64| if x as usize >= map.len() { map.len().div_ceil(page) * page } else { (x as usize / page) * page };
        let (zap, evict) = (start(zap.start)..end(zap.end), start(evict.start)..end(evict.end));
        // SAFETY: the ranges lie inside the mapping (rounded up to its last OS page, which the
        // mapping covers whole), a shared, read-only map of a file no facekit writer changes
        // while it is open: after MADV_DONTNEED the next read faults the same bytes back in
        // from the file, so no reference ever sees other contents.
        unsafe {
            if !zap.is_empty() {
                libc::madvise(map.as_ptr().add(zap.start) as *mut libc::c_void, zap.len(), libc::MADV_DONTNEED);
            }
            if !evict.is_empty() {
                libc::posix_fadvise(
                    file.as_raw_fd(),
                    evict.start as libc::off_t,
                    evict.len() as libc::off_t,
                    libc::POSIX_FADV_DONTNEED,
                );
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod advice {
    use std::fs::File;
    use std::ops::Range;

    pub(super) fn will_need(_map: &[u8], _range: Range<u64>) {}

    pub(super) fn drop_range(_map: &[u8], _file: &File, _zap: Range<u64>, _evict: Range<u64>) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LoaderConfig, Order};

    fn pages() -> Pages {
        let shard: Vec<(u64, u32)> = (0..4000).map(|i| (48 + 100 * i, 100)).collect();
        Pages::new([(0, 0, shard)], 1000)
    }

    fn plan(order: Order, rank: usize, world: usize) -> EpochPlan {
        let cfg = LoaderConfig { batch_size: 8, world_size: world, rank, order, ..LoaderConfig::default() };
        EpochPlan::new(order.sequence(&pages(), true, 3, 1), &cfg, 1)
    }

    #[test]
    fn every_page_a_rank_reads_opens_once_and_closes_once_after_it_opens() {
        for (order, world) in
            [(Order::QuasiRandom { window: 4 }, 1), (Order::QuasiRandom { window: 4 }, 3), (Order::Global, 2)]
        {
            for rank in 0..world {
                let p = plan(order, rank, world);
                let s = PageSchedule::new(&p, &pages());
                let mut read: Vec<usize> = p.order[..p.batches * 8].iter().map(|&g| pages().page_of(g)).collect();
                read.sort();
                read.dedup();
                let mut opened: Vec<usize> = s.opens.concat();
                opened.sort();
                assert_eq!(opened, read);
                for page in read {
                    let at = |v: &Vec<Vec<usize>>| v.iter().position(|b| b.contains(&page)).unwrap();
                    assert!(at(&s.opens) <= at(&s.closes));
                }
            }
        }
    }

    #[test]
    fn dropped_ranges_merge_into_runs() {
        let mut runs = Runs::default();
        assert_eq!(runs.add(10..20), 10..20);
        assert_eq!(runs.add(30..40), 30..40);
        assert_eq!(runs.add(20..30), 10..40);
        assert_eq!(runs.add(50..60), 50..60);
        assert_eq!(runs.add(0..5), 0..5);
        assert_eq!(runs.0, vec![0..5, 10..40, 50..60]);
        assert_eq!(runs.add(5..55), 0..60);
        assert_eq!(runs.0, vec![0..60]);
    }

    #[test]
    fn read_ahead_holds_a_window_of_pages_where_the_global_order_holds_them_all() {
        let quasi = PageSchedule::new(&plan(Order::QuasiRandom { window: 4 }, 0, 1), &pages());
        let global = PageSchedule::new(&plan(Order::Global, 0, 1), &pages());
        // 401 pages of 10 records (the first of 9); batches of 8 drawn from 4 open pages.
        assert!(quasi.most_held(4) <= 12, "{}", quasi.most_held(4));
        assert!(global.most_held(4) >= 390, "{}", global.most_held(4));
    }
}
