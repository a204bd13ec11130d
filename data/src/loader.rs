//! The loader: the stages in a row. [`crate::order`] gives the epoch's sequence, [`crate::plan`]
//! this rank's batches, [`crate::fetch`] brings their pages in (and drops them), decode threads
//! ([`crate::decode`]) write each batch into a slot of the ring ([`crate::ring`]), and the
//! iterator yields the batches in plan order through a bounded, reordering prefetch queue.

use super::batch::{Batch, Entry};
use super::decode::RecordDecoder;
use super::error::{Error, Problem, RecordError, Result};
use super::fetch::{Fetch, ReadAhead, ShardMaps};
use super::pages::Pages;
use super::plan::EpochPlan;
use super::ring::{HostAlloc, Ring, Slot, SlotAlloc, SlotStats};
use super::LoaderConfig;
use crate::augment::View;
use crossbeam_channel::{Receiver, Sender};
use facekit_shard::{Dataset, Labels, ShardReader};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// How many corrupt-record messages [`LoaderStats`] keeps, the latest ones (the count keeps going).
const MAX_CORRUPT_MESSAGES: usize = 100;

/// Several datasets seen as one global index: record `g` of the loader is record
/// `g - start[k]` of dataset `k`.
///
/// Class ids: when every dataset has the same label map (for example a training set and a set
/// packed later with the same identities), ids are used as stored. Otherwise the datasets are
/// taken as disjoint identity sets and dataset `k`'s ids are offset by the sum of the manifest
/// `classes` of datasets `0..k`; [`Loader::class_offsets`] reports the offsets used.
struct Sources {
    datasets: Vec<Arc<Dataset>>,
    starts: Vec<u64>,
    class_offsets: Vec<u32>,
    classes: u32,
    pages: Arc<Pages>,
}

/// Where one record lies.
struct Place<'a> {
    dataset: usize,
    local: usize,
    shard: &'a ShardReader,
    record: usize,
    offset: u64,
}

impl Sources {
    fn new(datasets: Vec<Arc<Dataset>>, page_bytes: u64) -> Result<Self> {
        if datasets.is_empty() {
            return Err(Error::Config("the loader needs at least one dataset".into()));
        }
        let mut starts = vec![0u64];
        for d in &datasets {
            starts.push(starts.last().unwrap() + d.len() as u64);
        }
        check_class_ids(&datasets, &starts)?;
        let first = &datasets[0];
        let shared =
            datasets.iter().all(|d| d.labels() == first.labels() && d.manifest().classes == first.manifest().classes);
        let (class_offsets, classes) = if shared {
            (vec![0; datasets.len()], first.manifest().classes)
        } else {
            let mut offsets = Vec::with_capacity(datasets.len());
            let mut total = 0u32;
            for d in &datasets {
                offsets.push(total);
                total = total
                    .checked_add(d.manifest().classes)
                    .ok_or_else(|| Error::Config("the datasets' total class count overflows u32".into()))?;
            }
            (offsets, total)
        };
        let pages = Arc::new(Pages::of_datasets(&datasets, page_bytes));
        Ok(Sources { datasets, starts, class_offsets, classes, pages })
    }

    fn len(&self) -> u64 {
        *self.starts.last().unwrap()
    }

    /// Dataset, shard, record in the shard and byte offset of global record `g`.
    fn place(&self, g: u64) -> Place<'_> {
        let dataset = self.starts.partition_point(|&s| s <= g) - 1;
        let local = (g - self.starts[dataset]) as usize;
        let ds = &self.datasets[dataset];
        let (s, record) = ds.locate(local).expect("global record numbers come from the plan, below len()");
        let shard = &ds.shards()[s];
        Place { dataset, local, shard, record, offset: shard.index()[record].offset }
    }

    /// Decodes global record `g` into `out` and returns its labels, the class id offset into
    /// the loader's label space.
    fn decode(
        &self,
        g: u64,
        dec: &mut RecordDecoder,
        size: u32,
        view: &View,
        out: &mut [u8],
    ) -> Result<Labels, RecordError> {
        let at = self.place(g);
        let error = |offset, origin, problem| RecordError {
            index: g,
            shard: at.shard.path().to_path_buf(),
            record: at.record as u64,
            offset,
            origin,
            problem,
        };
        let rec = self.datasets[at.dataset].record(at.local).map_err(|e| {
            let (offset, problem) = match e {
                facekit_shard::Error::Corrupt { source, .. } => (source.offset, Problem::Corrupt(source.reason)),
                other => (at.offset, Problem::Corrupt(other.to_string())),
            };
            error(offset, None, problem)
        })?;
        let origin = || Some(String::from_utf8_lossy(rec.path).into_owned());
        dec.decode_into(&rec, size, view, out).map_err(|e| error(at.offset, origin(), Problem::Undecodable(e)))?;
        let mut labels = rec.labels();
        labels.class_id = labels.class_id.map(|c| c + self.class_offsets[at.dataset]);
        Ok(labels)
    }
}

/// Every class id in the indexes (read without touching the records) must name a row of the
/// ArcFace head: a larger one would index out of it inside libtorch.
fn check_class_ids(datasets: &[Arc<Dataset>], starts: &[u64]) -> Result<()> {
    for (d, ds) in datasets.iter().enumerate() {
        let classes = ds.manifest().classes;
        let mut first = starts[d];
        for shard in ds.shards() {
            let bad = shard
                .index()
                .iter()
                .enumerate()
                .find(|(_, e)| e.class_id != facekit_shard::format::UNKNOWN_CLASS && e.class_id >= classes);
            if let Some((i, e)) = bad {
                let problem =
                    Problem::Corrupt(format!("class id {} is not below the manifest's {classes} classes", e.class_id));
                let shard = shard.path().to_path_buf();
                return Err(RecordError {
                    index: first + i as u64,
                    shard,
                    record: i as u64,
                    offset: e.offset + 8,
                    origin: None,
                    problem,
                }
                .into());
            }
            first += shard.len() as u64;
        }
    }
    Ok(())
}

/// Streams batches from one or more datasets. See the crate's documentation.
pub struct Loader {
    sources: Arc<Sources>,
    cfg: LoaderConfig,
    ring: Arc<Ring>,
    maps: Option<Arc<ShardMaps>>,
}

impl Loader {
    /// A loader over `datasets`, concatenated in the given order (see [`Loader::class_offsets`]
    /// for how their class ids are combined), its batch slots in plain host memory.
    pub fn new(datasets: Vec<Arc<Dataset>>, cfg: LoaderConfig) -> Result<Self> {
        Self::with_alloc(datasets, cfg, Arc::new(HostAlloc))
    }

    /// A loader whose batch slots come from `alloc` (pinned memory, for example), all made now.
    pub fn with_alloc(datasets: Vec<Arc<Dataset>>, cfg: LoaderConfig, alloc: Arc<dyn SlotAlloc>) -> Result<Self> {
        cfg.validate()?;
        let sources = Sources::new(datasets, cfg.page_bytes)?;
        if EpochPlan::batches_for(sources.len(), &cfg) == 0 {
            return Err(Error::Config(format!(
                "{} records give no batch of {} for {} rank(s){}",
                sources.len(),
                cfg.batch_size,
                cfg.world_size,
                if cfg.drop_last { " with drop_last" } else { "" }
            )));
        }
        let maps = match cfg.fetch {
            Fetch::Mapped => None,
            Fetch::ReadAhead { .. } => Some(Arc::new(ShardMaps::open(&sources.datasets)?)),
        };
        let ring = Ring::new(alloc, cfg.batch_size * Batch::image_len_for(cfg.image_size), cfg.ring_slots())?;
        Ok(Loader { sources: Arc::new(sources), cfg, ring, maps })
    }

    /// True when at least one record has a known identity class.
    pub fn has_class_labels(&self) -> bool {
        self.sources.datasets.iter().any(|d| d.class_ids().iter().any(Option::is_some))
    }

    /// The configuration.
    pub fn config(&self) -> &LoaderConfig {
        &self.cfg
    }

    /// Total records over all datasets.
    pub fn len(&self) -> u64 {
        self.sources.len()
    }

    /// True when there is no record (never, for a constructed loader).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of classes in the combined label space (class ids are `0..num_classes`).
    pub fn num_classes(&self) -> u32 {
        self.sources.classes
    }

    /// Offset added to each dataset's class ids: all zero when the datasets share one label map,
    /// otherwise the running sum of the preceding datasets' manifest `classes`.
    pub fn class_offsets(&self) -> &[u32] {
        &self.sources.class_offsets
    }

    /// The records' pages (see [`crate::pages`]), for the quasi-random order and the read-ahead.
    pub fn pages(&self) -> &Pages {
        &self.sources.pages
    }

    /// Batches this rank yields per epoch.
    pub fn batches_per_epoch(&self) -> u64 {
        EpochPlan::batches_for(self.len(), &self.cfg) as u64
    }

    /// The plan of epoch `epoch` for this rank (which records, in which order).
    pub fn plan(&self, epoch: u64) -> EpochPlan {
        let sequence = self.cfg.order.sequence(&self.sources.pages, self.cfg.shuffle, self.cfg.seed, epoch);
        EpochPlan::new(sequence, &self.cfg, epoch)
    }

    /// How many batch slots the ring has allocated (growing only while the consumer keeps more
    /// batches than it holds).
    pub fn slot_stats(&self) -> SlotStats {
        self.ring.stats()
    }

    /// Iterates over epoch `epoch` from batch `start_batch` (earlier batches are skipped without
    /// being read, for resuming). The batches are the same whatever the thread count or timing.
    pub fn epoch(&self, epoch: u64, start_batch: u64) -> EpochIter {
        let plan = Arc::new(self.plan(epoch));
        let read_ahead = match (self.cfg.fetch, &self.maps) {
            (Fetch::ReadAhead { batches }, Some(maps)) => {
                Some(ReadAhead::new(&plan, self.sources.pages.clone(), maps.clone(), batches))
            }
            _ => None,
        };
        EpochIter::new(self.sources.clone(), self.cfg.clone(), plan, start_batch, self.ring.clone(), read_ahead)
    }
}

/// One corrupt record met while loading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptRecord {
    /// Global record number.
    pub index: u64,
    /// The error, naming shard, record and byte offset.
    pub error: String,
    /// The same, as a value.
    pub record: RecordError,
}

/// What an epoch iterator has done so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoaderStats {
    /// Batches yielded.
    pub batches: u64,
    /// Images yielded.
    pub images: u64,
    /// Corrupt records skipped (only with `skip_corrupt`).
    pub corrupt_skipped: u64,
    /// The latest corrupt records met (at most 100, oldest first), with their errors.
    pub corrupt: Vec<CorruptRecord>,
}

/// A built batch and the corrupt records it skipped.
type Built = Result<(Batch, Vec<CorruptRecord>)>;

/// State shared with the decode threads.
struct Shared {
    sources: Arc<Sources>,
    cfg: LoaderConfig,
    plan: Arc<EpochPlan>,
    stop: AtomicBool,
}

impl Shared {
    /// Decodes batch `b` into `slot`. A corrupt record fails the batch, or with `skip_corrupt` is
    /// replaced (see [`Shared::fill`]).
    fn build(&self, b: usize, mut slot: Slot, dec: &mut RecordDecoder) -> Option<Built> {
        let positions = self.plan.batch_positions(b);
        let len = Batch::image_len_for(self.cfg.image_size);
        let images = slot.writable(positions.len() * len);
        let mut entries = Vec::with_capacity(positions.len());
        let mut corrupt = Vec::new();
        for (out, p) in images.chunks_exact_mut(len).zip(positions) {
            // The iterator is gone: nobody will see this batch.
            if self.stop.load(Ordering::Relaxed) {
                return None;
            }
            match self.fill(p, out, dec, &mut corrupt) {
                Ok(entry) => entries.push(entry),
                Err(e) => return Some(Err(e)),
            }
        }
        Some(Ok((Batch::assemble(slot, self.cfg.image_size, &entries), corrupt)))
    }

    /// Decodes the record at position `p` of the plan into `out`. With `skip_corrupt` a corrupt
    /// record is replaced by the next decodable record of the plan (wrapping around): batch
    /// boundaries never move, so skipping stays deterministic and `start_batch` needs no
    /// knowledge of earlier batches.
    fn fill(
        &self,
        p: usize,
        out: &mut [u8],
        dec: &mut RecordDecoder,
        corrupt: &mut Vec<CorruptRecord>,
    ) -> Result<Entry> {
        let order = &self.plan.order;
        let mut q = p;
        loop {
            let g = order[q];
            let view = self.plan.view(g);
            match self.sources.decode(g, dec, self.cfg.image_size, &view, out) {
                Ok(labels) => return Ok(Entry { index: g, flipped: view.flip, labels }),
                Err(e) if !self.cfg.skip_corrupt => return Err(e.into()),
                Err(e) => {
                    // Counted only at its own position, so every corrupt record counts once.
                    if q == p {
                        corrupt.push(CorruptRecord { index: g, error: e.to_string(), record: e.clone() });
                    }
                    q = (q + 1) % order.len();
                    if q == p {
                        return Err(Error::AllCorrupt { last: Box::new(e) });
                    }
                }
            }
        }
    }
}

/// The batches of one epoch, in plan order; yields `Err` once and then stops on a corrupt
/// record (unless `skip_corrupt`).
pub struct EpochIter {
    shared: Arc<Shared>,
    ring: Arc<Ring>,
    read_ahead: Option<ReadAhead>,
    next_issue: usize,
    next_yield: usize,
    end: usize,
    prefetch: usize,
    pending: BTreeMap<usize, Built>,
    jobs: Option<Sender<(usize, Slot)>>,
    results: Option<Receiver<(usize, Built)>>,
    threads: Vec<JoinHandle<()>>,
    inline: Option<RecordDecoder>,
    stats: LoaderStats,
    failed: bool,
}

impl EpochIter {
    fn new(
        sources: Arc<Sources>,
        cfg: LoaderConfig,
        plan: Arc<EpochPlan>,
        start_batch: u64,
        ring: Arc<Ring>,
        read_ahead: Option<ReadAhead>,
    ) -> Self {
        let end = plan.batches;
        let start = (start_batch.min(end as u64)) as usize;
        let workers = cfg.workers;
        let prefetch = cfg.effective_prefetch();
        let shared = Arc::new(Shared { sources, cfg, plan, stop: AtomicBool::new(false) });
        let mut it = EpochIter {
            shared: shared.clone(),
            ring,
            read_ahead,
            next_issue: start,
            next_yield: start,
            end,
            prefetch,
            pending: BTreeMap::new(),
            jobs: None,
            results: None,
            threads: Vec::new(),
            inline: None,
            stats: LoaderStats::default(),
            failed: false,
        };
        if workers == 0 {
            it.inline = Some(RecordDecoder::new());
            return it;
        }
        // Jobs are only sent while fewer than `prefetch` batches are outstanding, so neither
        // channel can hold more than `prefetch` entries: memory stays bounded.
        let (job_tx, job_rx) = crossbeam_channel::unbounded::<(usize, Slot)>();
        let (res_tx, res_rx) = crossbeam_channel::unbounded::<(usize, Built)>();
        for _ in 0..workers {
            let (job_rx, res_tx, shared) = (job_rx.clone(), res_tx.clone(), shared.clone());
            it.threads.push(std::thread::spawn(move || {
                let mut dec = RecordDecoder::new();
                for (b, slot) in job_rx {
                    let Some(built) = shared.build(b, slot, &mut dec) else { break };
                    if res_tx.send((b, built)).is_err() {
                        break;
                    }
                }
            }));
        }
        it.jobs = Some(job_tx);
        it.results = Some(res_rx);
        it
    }

    /// Counts so far: batches, images, corrupt records skipped (with the first errors).
    pub fn stats(&self) -> &LoaderStats {
        &self.stats
    }

    /// Batches left to yield.
    pub fn remaining(&self) -> usize {
        self.end - self.next_yield
    }

    fn next_built(&mut self) -> Built {
        let b = self.next_yield;
        if let Some(dec) = self.inline.as_mut() {
            let slot = self.ring.take()?;
            if let Some(r) = self.read_ahead.as_mut() {
                r.issued(b);
            }
            return self.shared.build(b, slot, dec).expect("the iterator itself is building");
        }
        // The slot is taken here, on the consumer's thread: when every slot is held by the
        // consumer the ring grows instead of a decode thread waiting for one forever.
        let jobs = self.jobs.as_ref().expect("workers started");
        while self.next_issue < self.end && self.next_issue - self.next_yield < self.prefetch {
            let slot = self.ring.take()?;
            if let Some(r) = self.read_ahead.as_mut() {
                r.issued(self.next_issue);
            }
            jobs.send((self.next_issue, slot)).map_err(|_| Error::WorkerLost)?;
            self.next_issue += 1;
        }
        let results = self.results.as_ref().expect("workers started");
        loop {
            if let Some(built) = self.pending.remove(&b) {
                return built;
            }
            let (k, built) = results.recv().map_err(|_| Error::WorkerLost)?;
            self.pending.insert(k, built);
        }
    }
}

impl Iterator for EpochIter {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.next_yield >= self.end {
            return None;
        }
        let built = self.next_built();
        if let Some(r) = self.read_ahead.as_mut() {
            r.passed(self.next_yield);
        }
        self.next_yield += 1;
        match built {
            Ok((batch, corrupt)) => {
                self.stats.batches += 1;
                self.stats.images += batch.n as u64;
                self.stats.corrupt_skipped += corrupt.len() as u64;
                self.stats.corrupt.extend(corrupt);
                let excess = self.stats.corrupt.len().saturating_sub(MAX_CORRUPT_MESSAGES);
                self.stats.corrupt.drain(..excess);
                Some(Ok(batch))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = if self.failed { 0 } else { self.remaining() };
        (0, Some(n))
    }
}

impl Drop for EpochIter {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.jobs = None;
        self.results = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
