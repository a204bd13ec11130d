//! The loader: concatenated datasets, a deterministic epoch plan, and a pool of decode threads
//! feeding a bounded, reordering prefetch queue.

use super::augment::View;
use super::batch::Batch;
use super::decode::RecordDecoder;
use super::plan::EpochPlan;
use super::LoaderConfig;
use facekit_shard::{Dataset, Labels};
use anyhow::{anyhow, bail, Context, Result};
use crossbeam_channel::{Receiver, Sender};
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
}

impl Sources {
    fn new(datasets: Vec<Arc<Dataset>>) -> Result<Self> {
        if datasets.is_empty() {
            bail!("the loader needs at least one dataset");
        }
        let mut starts = vec![0u64];
        for d in &datasets {
            starts.push(starts.last().unwrap() + d.len() as u64);
        }
        // Every class id in the indexes (read without touching the records) must name a row of
        // the ArcFace head: a larger one would index out of it inside libtorch.
        for d in &datasets {
            let classes = d.manifest().classes;
            for (k, shard) in d.shards().iter().enumerate() {
                if let Some((i, e)) = shard
                    .index()
                    .iter()
                    .enumerate()
                    .find(|(_, e)| e.class_id != facekit_shard::format::UNKNOWN_CLASS && e.class_id >= classes)
                {
                    bail!(
                        "record {i} of shard {} ({}) has class id {}, not below the manifest's {classes} classes",
                        k,
                        shard.path().display(),
                        e.class_id
                    );
                }
            }
        }
        let first = &datasets[0];
        let shared = datasets
            .iter()
            .all(|d| d.labels() == first.labels() && d.manifest().classes == first.manifest().classes);
        let (class_offsets, classes) = if shared {
            (vec![0; datasets.len()], first.manifest().classes)
        } else {
            let mut offsets = Vec::with_capacity(datasets.len());
            let mut total = 0u32;
            for d in &datasets {
                offsets.push(total);
                total = total.checked_add(d.manifest().classes).context("total class count overflows u32")?;
            }
            (offsets, total)
        };
        Ok(Sources { datasets, starts, class_offsets, classes })
    }

    fn len(&self) -> u64 {
        *self.starts.last().unwrap()
    }

    /// Dataset number and local record number of global record `g`.
    fn locate(&self, g: u64) -> (usize, usize) {
        let k = self.starts.partition_point(|&s| s <= g) - 1;
        (k, (g - self.starts[k]) as usize)
    }

    /// Decodes global record `g` into `out` and returns its labels, the class id offset into
    /// the loader's label space.
    fn decode(&self, g: u64, dec: &mut RecordDecoder, size: u32, view: &View, out: &mut [u8]) -> Result<Labels> {
        let (k, i) = self.locate(g);
        let ds = &self.datasets[k];
        let rec = ds.record(i)?;
        dec.decode_into(&rec, size, view, out).with_context(|| {
            let (s, j) = ds.locate(i).expect("record() succeeded, so i is in range");
            format!(
                "cannot decode record {j} of shard {} (origin '{}')",
                ds.shards()[s].path().display(),
                String::from_utf8_lossy(rec.path)
            )
        })?;
        let mut labels = rec.labels();
        labels.class_id = labels.class_id.map(|c| c + self.class_offsets[k]);
        Ok(labels)
    }
}

/// Streams batches from one or more datasets. See the crate's documentation.
pub struct Loader {
    sources: Arc<Sources>,
    cfg: LoaderConfig,
}

impl Loader {
    /// A loader over `datasets`, concatenated in the given order (see [`Loader::class_offsets`]
    /// for how their class ids are combined).
    pub fn new(datasets: Vec<Arc<Dataset>>, cfg: LoaderConfig) -> Result<Self> {
        cfg.validate()?;
        let sources = Sources::new(datasets)?;
        let plan = EpochPlan::new(sources.len(), &cfg, 0);
        if plan.batches == 0 {
            bail!(
                "{} records give no batch of {} for {} rank(s){}",
                sources.len(),
                cfg.batch_size,
                cfg.world_size,
                if cfg.drop_last { " with drop_last" } else { "" }
            );
        }
        Ok(Loader { sources: Arc::new(sources), cfg })
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

    /// Batches this rank yields per epoch.
    pub fn batches_per_epoch(&self) -> u64 {
        EpochPlan::new(self.len(), &self.cfg, 0).batches as u64
    }

    /// The plan of epoch `epoch` for this rank (which records, in which order).
    pub fn plan(&self, epoch: u64) -> EpochPlan {
        EpochPlan::new(self.len(), &self.cfg, epoch)
    }

    /// Iterates over epoch `epoch` from batch `start_batch` (earlier batches are skipped without
    /// being read, for resuming). The batches are the same whatever the thread count or timing.
    pub fn epoch(&self, epoch: u64, start_batch: u64) -> EpochIter {
        EpochIter::new(self.sources.clone(), self.cfg.clone(), Arc::new(self.plan(epoch)), start_batch)
    }
}

/// One corrupt record met while loading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptRecord {
    /// Global record number.
    pub index: u64,
    /// The error, naming shard and record.
    pub error: String,
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
    /// Decodes batch `b`. A corrupt record fails the batch, or with `skip_corrupt` is replaced
    /// by the next decodable record of the plan (wrapping around): batch boundaries never move,
    /// so skipping stays deterministic and `start_batch` needs no knowledge of earlier batches.
    fn build(&self, b: usize, dec: &mut RecordDecoder) -> Built {
        let positions = self.plan.batch_positions(b);
        let size = self.cfg.image_size;
        let mut batch = Batch::with_capacity(positions.len(), size);
        let len = batch.image_len();
        let mut corrupt = Vec::new();
        for (slot, p) in positions.enumerate() {
            if self.stop.load(Ordering::Relaxed) {
                bail!("loader stopped");
            }
            let out = &mut batch.images[slot * len..(slot + 1) * len];
            let order = &self.plan.order;
            let mut q = p;
            let labels = loop {
                let g = order[q];
                let view = self.plan.view(g);
                match self.sources.decode(g, dec, size, &view, out) {
                    Ok(l) => {
                        batch.indices.push(g);
                        batch.flipped.push(view.flip);
                        break l;
                    }
                    Err(e) if !self.cfg.skip_corrupt => return Err(e.context(format!("record {g} of the loader"))),
                    Err(e) => {
                        // Counted only at its own position, so every corrupt record counts once.
                        if q == p {
                            corrupt.push(CorruptRecord { index: g, error: format!("{e:#}") });
                        }
                        q = (q + 1) % order.len();
                        if q == p {
                            bail!("every record of this rank's epoch is corrupt; last error: {e:#}");
                        }
                    }
                }
            };
            batch.push_labels(&labels);
        }
        Ok((batch, corrupt))
    }
}

/// The batches of one epoch, in plan order; yields `Err` once and then stops on a corrupt
/// record (unless `skip_corrupt`).
pub struct EpochIter {
    shared: Arc<Shared>,
    next_issue: usize,
    next_yield: usize,
    end: usize,
    prefetch: usize,
    pending: BTreeMap<usize, Built>,
    jobs: Option<Sender<usize>>,
    results: Option<Receiver<(usize, Built)>>,
    threads: Vec<JoinHandle<()>>,
    inline: Option<RecordDecoder>,
    stats: LoaderStats,
    failed: bool,
}

impl EpochIter {
    fn new(sources: Arc<Sources>, cfg: LoaderConfig, plan: Arc<EpochPlan>, start_batch: u64) -> Self {
        let end = plan.batches;
        let start = (start_batch.min(end as u64)) as usize;
        let workers = cfg.workers;
        let prefetch = cfg.effective_prefetch();
        let shared = Arc::new(Shared { sources, cfg, plan, stop: AtomicBool::new(false) });
        let mut it = EpochIter {
            shared: shared.clone(),
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
        let (job_tx, job_rx) = crossbeam_channel::unbounded::<usize>();
        let (res_tx, res_rx) = crossbeam_channel::unbounded::<(usize, Built)>();
        for _ in 0..workers {
            let (job_rx, res_tx, shared) = (job_rx.clone(), res_tx.clone(), shared.clone());
            it.threads.push(std::thread::spawn(move || {
                let mut dec = RecordDecoder::new();
                for b in job_rx {
                    let built = shared.build(b, &mut dec);
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
            return self.shared.build(b, dec);
        }
        let jobs = self.jobs.as_ref().expect("workers started");
        while self.next_issue < self.end && self.next_issue - self.next_yield < self.prefetch {
            jobs.send(self.next_issue).map_err(|_| anyhow!("decode threads are gone"))?;
            self.next_issue += 1;
        }
        let results = self.results.as_ref().expect("workers started");
        loop {
            if let Some(built) = self.pending.remove(&b) {
                return built;
            }
            let (k, built) = results.recv().map_err(|_| anyhow!("a decode thread panicked"))?;
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
