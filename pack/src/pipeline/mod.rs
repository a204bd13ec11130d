//! The one resumable, parallel, ordered pipeline that every way of making a dataset runs on:
//! `facekit pack` (photos, [`crate::run`]) and `facekit import rec` (MXNet RecordIO,
//! [`crate::rec::import`]) are [`Source`]s, and [`run`] does the rest.
//!
//! A source gives its items in one fixed order, turns one item into a record or a reject, says
//! what its input is (settings and fingerprint, compared on `--resume`) and keeps its own
//! counters. The driver, under an exclusive lock on every dataset it writes:
//! - decides where to write ([`crate::replace::Destination`]: in place, or staged beside a
//!   finished dataset it will replace);
//! - removes stale temporary files, and on `--resume` checks the last checkpoint
//!   ([`Progress`]) against the source and the shards on disk;
//! - processes the items on worker threads ([`workers`]), writing the outcomes in input order
//!   into the training and validation `DatasetWriter`s and the rejects log ([`crate::rejects`]);
//! - checkpoints after every training shard (the validation shard closed at the same item);
//! - finishes: the final checkpoint, the manifests, the rejects list, the report, and last the
//!   progress file's removal or the replacement of a finished dataset, each step safe to redo.
//!
//! Because the order never depends on thread timing, the output is byte-identical for any
//! number of threads, and a resumed run equals an uninterrupted one.

pub mod events;
pub mod progress;
pub mod workers;

pub use crate::replace::Destination;
pub use events::{Event, Flow, Observer, Step};
pub use progress::{check_shards, Final, Progress};

use crate::rejects::RejectsLog;
use crate::replace::{base_name, remove_file};
use crate::report::Reject;
use anyhow::{bail, Context, Result};
use facekit_io::StopFlag;
use facekit_shard::{DatasetPaths, DatasetWriter, Manifest, Record};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::Path;
use std::time::Instant;

/// What the writer does with one item's outcome.
pub enum Verdict<T> {
    /// Listed in the rejects log, then counted.
    Reject(Reject, T),
    /// Written into the validation dataset (`valid`, when the run has one) or the training
    /// dataset, then counted.
    Keep {
        /// The record.
        record: Box<Record>,
        /// Held out for validation.
        valid: bool,
        /// What the source counts.
        tally: T,
    },
}

/// The checkpoint type of source `S`.
pub(crate) type ProgressOf<S> = Progress<<S as Source>::Input, <S as Source>::Counters, <S as Source>::Final>;

/// A way of making a dataset: its items in order, one item processed, its input's fingerprint
/// and its counters, its manifests and report.
pub trait Source: Sync {
    /// One unit of input (a photo file, a `.rec` entry).
    type Item: Send;
    /// A worker thread's own state (a face detector), made on the thread.
    type Worker;
    /// What processing one item gives.
    type Outcome: Send;
    /// What the counters learn from one item.
    type Tally;
    /// Settings and fingerprint of the input, compared on `--resume`.
    type Input: Clone + PartialEq + Serialize + DeserializeOwned;
    /// Running totals, kept in the checkpoints.
    type Counters: Clone + Serialize + DeserializeOwned;
    /// The final checkpoint's mark.
    type Final: Final;
    /// `NAME.report.json`.
    type Report: Serialize + DeserializeOwned;

    /// The progress file's `format`.
    const FORMAT: &'static str;

    /// The input's settings and fingerprint.
    fn input(&self) -> &Self::Input;
    /// Number of items.
    fn total(&self) -> u64;
    /// True when a validation dataset (the first sibling) is written.
    fn wants_valid(&self) -> bool {
        false
    }
    /// Counters of a run that starts.
    fn counters(&self) -> Self::Counters;
    /// Rejects listed at the start of a fresh run, before the first item.
    fn preamble(&self) -> Vec<(Reject, Self::Tally)> {
        Vec::new()
    }
    /// The items from number `from` on, in input order.
    fn items(&self, from: u64) -> Box<dyn Iterator<Item = Self::Item> + Send + '_>;
    /// What an item holds while in flight, in the unit of [`Source::budget`].
    fn cost(&self, item: &Self::Item) -> u64;
    /// Most cost in flight.
    fn budget(&self) -> u64;
    /// A worker's state.
    fn worker(&self) -> Self::Worker;
    /// Processes one item (on a worker thread).
    fn process(&self, worker: &mut Self::Worker, item: &Self::Item) -> Self::Outcome;
    /// The item as an error names it.
    fn name(&self, item: &Self::Item) -> String;
    /// What becomes of an item's outcome (on the writer thread, in input order).
    fn judge(&self, item: &Self::Item, outcome: Self::Outcome) -> Verdict<Self::Tally>;
    /// Counts one item.
    fn count(&self, counters: &mut Self::Counters, tally: Self::Tally);
    /// Refuses a checkpoint that cannot be trusted or belongs to another input or settings.
    fn check(&self, p: &ProgressOf<Self>, file: &Path, dataset: &DatasetPaths) -> Result<()>;
    /// The final checkpoint's mark, once every shard is complete.
    fn finished(&self, dest: &Destination, p: &ProgressOf<Self>, run: &RunStats) -> Self::Final;
    /// Writes the manifests and label maps of the datasets made (one already in place that
    /// lists the same shards is kept).
    fn manifests(&self, dest: &Destination, p: &ProgressOf<Self>) -> Result<()>;
    /// The report of the finished run.
    fn report(&self, dest: &Destination, p: &ProgressOf<Self>, run: &RunStats) -> Result<Self::Report>;
}

/// What every run needs besides its source.
#[derive(Debug, Clone)]
pub struct RunOptions<'a> {
    /// The main dataset (`training/celeb`).
    pub output: &'a Path,
    /// Suffixes of the datasets written beside it (`.valid`), locked and replaced with it.
    pub siblings: &'a [&'a str],
    /// The command, for messages (`pack`, `import`).
    pub tool: &'static str,
    /// What the progress bar counts (`images`, `records`).
    pub unit: &'static str,
    /// Target shard size in bytes.
    pub shard_size: u64,
    /// Worker threads.
    pub threads: usize,
    /// Continue an interrupted run.
    pub resume: bool,
    /// Replace a finished dataset of the same name, once the new one is complete.
    pub overwrite: bool,
    /// Show a progress bar.
    pub progress: bool,
    /// Set to stop before the next item; the last checkpoint stays resumable.
    pub stop: &'a StopFlag,
    /// Where events go.
    pub events: &'a Observer,
}

/// This run's timing, for reports.
#[derive(Debug, Clone, Copy)]
pub struct RunStats {
    /// When the run started.
    pub started: Instant,
    /// Items processed in this run (not counting those before a resume).
    pub processed: u64,
    /// True when this run continued an earlier one.
    pub resumed: bool,
    /// Worker threads.
    pub threads: usize,
}

/// How a run ended.
#[derive(Debug)]
pub enum End<R> {
    /// Every item was processed; the datasets and the report are written.
    Done(Box<R>),
    /// Stopped early; `shards` complete shards are resumable with `--resume`.
    Interrupted {
        /// Complete training shards recorded in the progress file.
        shards: usize,
    },
}

/// Runs a pipeline: `plan` makes the source once the datasets are locked and before anything
/// is removed or written (so a missing model or a bad input costs nothing).
pub fn run<S: Source>(opts: &RunOptions, plan: impl FnOnce() -> Result<S>) -> Result<End<S::Report>> {
    let started = Instant::now();
    let main = DatasetPaths::new(opts.output);
    let family: Vec<DatasetPaths> =
        std::iter::once(main.clone()).chain(opts.siblings.iter().map(|s| main.with_suffix(s))).collect();
    // Before anything is read or removed: one writer per dataset name.
    let _locks = family
        .iter()
        .map(|d| facekit_io::lock::exclusive(&d.lock(), &format!("dataset {}", base_name(d))))
        .collect::<Result<Vec<_>, _>>()?;
    let dest = Destination::choose(&main, opts.siblings, opts.resume, opts.overwrite, opts.tool)?;
    if dest.committing() {
        if !dest.finish(opts.events)? {
            return Ok(End::Interrupted { shards: 0 });
        }
        return Ok(End::Done(Box::new(read_report(&main.report(), opts.tool)?)));
    }
    let source = plan()?;
    let works: Vec<&DatasetPaths> = (0..family.len()).map(|i| dest.work(i)).collect();
    for p in &works {
        // The lock proves that no other facekit writes here: every temporary file is stale.
        let count = p.remove_stale_temps()?;
        if count > 0 {
            opts.events.emit(Event::RemovedTemps { count, dir: p.dir() });
        }
    }
    let resumed = resume_point(&source, opts, &works)?;
    let consumed = resumed.as_ref().map_or(0, |p| p.consumed);
    if let Some(p) = resumed.as_ref().filter(|p| p.finished.is_final()) {
        // The earlier run had written every shard and stopped in its bookkeeping: complete that.
        let stats = RunStats { started, processed: 0, resumed: true, threads: opts.threads };
        return complete(&source, opts, &dest, p, &stats);
    }
    let paths = works[0];
    let valid_paths = source.wants_valid().then(|| works.get(1).copied()).flatten();
    let mut sink = match resumed {
        Some(p) => Sink {
            train: DatasetWriter::resume(paths.clone(), opts.shard_size, p.shards)?,
            valid: valid_paths
                .map(|v| DatasetWriter::resume(v.clone(), opts.shard_size, p.valid_shards))
                .transpose()?,
            rejects: RejectsLog::resume(&paths.rejects(), p.rejects_bytes)?,
            counters: p.counters,
            consumed: p.consumed,
        },
        None => {
            for p in [paths.progress(), paths.report(), paths.rejects()] {
                remove_file(&p)?;
            }
            // Datasets left by an earlier unfinished run of this name would no longer match.
            for p in &works {
                p.remove_existing()?;
            }
            let mut sink = Sink {
                train: DatasetWriter::create(paths.clone(), opts.shard_size)?,
                valid: valid_paths.map(|v| DatasetWriter::create(v.clone(), opts.shard_size)).transpose()?,
                rejects: RejectsLog::create(&paths.rejects())?,
                counters: source.counters(),
                consumed: 0,
            };
            for (reject, tally) in source.preamble() {
                sink.rejects.push(&reject)?;
                source.count(&mut sink.counters, tally);
            }
            sink
        }
    };

    let bar = facekit_io::progress::items(source.total(), opts.unit);
    if !opts.progress {
        facekit_io::progress::hide(&bar);
    }
    bar.set_position(consumed);
    bar.reset_eta();
    let work = workers::Work {
        threads: opts.threads,
        thread_name: match opts.tool {
            "pack" => "facekit-pack",
            _ => "facekit-import",
        },
        budget: source.budget(),
        stop: opts.stop,
        cost: &|item: &S::Item| source.cost(item),
        init: &|| source.worker(),
        work: &|w: &mut S::Worker, item: &S::Item| source.process(w, item),
        name: &|item: &S::Item| source.name(item),
    };
    let progress_file = paths.progress();
    let all_written = workers::run(source.items(consumed), &work, |item, outcome| {
        bar.inc(1);
        sink.accept(&source, opts, &progress_file, &item, outcome)
    })?;
    bar.finish_and_clear();
    if !all_written || opts.stop.is_set() {
        let shards = ProgressOf::<S>::read(&progress_file, S::FORMAT, opts.tool).map_or(0, |p| p.shards.len());
        return Ok(End::Interrupted { shards });
    }
    let stats =
        RunStats { started, processed: source.total() - consumed, resumed: consumed > 0, threads: opts.threads };
    let last = sink.finish(&source, &dest, &stats)?;
    last.write(&progress_file)?;
    if opts.events.finished(Step::Checkpoint) {
        return Ok(End::Interrupted { shards: last.shards.len() });
    }
    complete(&source, opts, &dest, &last, &stats)
}

/// The checkpoint to continue from, when `--resume` is asked and one exists and still matches.
fn resume_point<S: Source>(source: &S, opts: &RunOptions, works: &[&DatasetPaths]) -> Result<Option<ProgressOf<S>>> {
    if !opts.resume {
        return Ok(None);
    }
    let (paths, tool) = (works[0], opts.tool);
    let file = paths.progress();
    if !file.is_file() {
        opts.events.emit(Event::NothingToResume { progress: &file });
        return Ok(None);
    }
    let p = ProgressOf::<S>::read(&file, S::FORMAT, tool)?;
    source.check(&p, &file, paths)?;
    let listed = [&p.shards, &p.valid_shards];
    for (d, shards) in works.iter().zip(listed) {
        check_shards(d, shards).with_context(|| format!("cannot resume; {tool} again without --resume"))?;
    }
    if p.finished.is_final() {
        // Written only once every dataset was complete: a manifest already written must list
        // exactly the checkpoint's shards, which were just checked.
        for (d, shards) in works.iter().zip(listed) {
            if !d.manifest().exists() {
                continue; // stopped before writing it: written now
            }
            let m = Manifest::read(&d.manifest()).with_context(|| {
                format!("cannot resume: the finished {tool}'s manifest {} is unreadable", d.manifest().display())
            })?;
            if &m.shards != shards {
                bail!(
                    "cannot resume: manifest {} lists other shards than the progress file {}",
                    d.manifest().display(),
                    file.display()
                );
            }
        }
        opts.events.emit(Event::Completing { dataset: &base_name(paths) });
        return Ok(Some(p));
    }
    if paths.manifest().exists() {
        bail!(
            "cannot resume: {} has a manifest, so a finished dataset is there, but the progress file {} belongs to an unfinished {tool}; \
             nothing was changed. Remove the progress file to keep the dataset, or {tool} again without --resume",
            base_name(paths),
            file.display()
        );
    }
    opts.events.emit(Event::Resuming { consumed: p.consumed, total: source.total(), shards: p.shards.len() });
    Ok(Some(p))
}

/// The writer's state: the datasets, the rejects log and the counts, in input order.
struct Sink<C> {
    train: DatasetWriter,
    valid: Option<DatasetWriter>,
    rejects: RejectsLog,
    counters: C,
    /// Items written or rejected, from the start of the input.
    consumed: u64,
}

impl<C: Clone + Serialize + DeserializeOwned> Sink<C> {
    /// Takes one item's outcome; false when the observer stops the run here.
    fn accept<S: Source<Counters = C>>(
        &mut self,
        source: &S,
        opts: &RunOptions,
        progress_file: &Path,
        item: &S::Item,
        outcome: S::Outcome,
    ) -> Result<bool> {
        match source.judge(item, outcome) {
            Verdict::Reject(reject, tally) => {
                self.rejects.push(&reject)?;
                source.count(&mut self.counters, tally);
            }
            Verdict::Keep { record, valid, tally } => {
                let what = || format!("writing {}", source.name(item));
                match self.valid.as_mut().filter(|_| valid) {
                    Some(v) => {
                        v.push(&record).with_context(what)?;
                    }
                    None => {
                        if self.train.push(&record).with_context(what)?.is_some() {
                            // A training shard is complete and holds everything before this
                            // item: close the validation shard too, so both datasets are
                            // complete up to the same item, and record that point before
                            // counting it.
                            if let Some(v) = self.valid.as_mut() {
                                v.flush_shard()?;
                            }
                            self.checkpoint(source, progress_file)?;
                            let shards = self.train.shards().len();
                            if opts.events.emit(Event::Checkpoint { shards }) == Flow::Stop {
                                return Ok(false);
                            }
                        }
                    }
                }
                source.count(&mut self.counters, tally);
            }
        }
        self.consumed += 1;
        Ok(true)
    }

    /// A checkpoint of the state so far.
    fn progress<S: Source<Counters = C>>(&mut self, source: &S) -> Result<ProgressOf<S>> {
        Ok(Progress {
            format: S::FORMAT.into(),
            input: source.input().clone(),
            consumed: self.consumed,
            shards: self.train.shards().to_vec(),
            valid_shards: self.valid.as_ref().map(|v| v.shards().to_vec()).unwrap_or_default(),
            counters: self.counters.clone(),
            // The list must be durable before a checkpoint that counts on its length.
            rejects_bytes: self.rejects.sync()?,
            finished: S::Final::default(),
        })
    }

    fn checkpoint<S: Source<Counters = C>>(&mut self, source: &S, file: &Path) -> Result<()> {
        self.progress(source)?.write(file)
    }

    /// Completes the last shards and returns the final checkpoint, to be written: from it on,
    /// every shard is complete and a resume only redoes what follows.
    fn finish<S: Source<Counters = C>>(
        mut self,
        source: &S,
        dest: &Destination,
        stats: &RunStats,
    ) -> Result<ProgressOf<S>> {
        self.train.flush_shard()?;
        if let Some(v) = self.valid.as_mut() {
            v.flush_shard()?;
        }
        let mut last = self.progress(source)?;
        last.finished = source.finished(dest, &last, stats);
        Ok(last)
    }
}

/// The steps after the final checkpoint, each one safe to redo after a crash: the manifests
/// (the source's), the rejects list under its final name, the report, and last
/// [`Destination::finish`] (the progress file's removal, or the replacement of a finished
/// dataset).
fn complete<S: Source>(
    source: &S,
    opts: &RunOptions,
    dest: &Destination,
    p: &ProgressOf<S>,
    stats: &RunStats,
) -> Result<End<S::Report>> {
    let stopped = Ok(End::Interrupted { shards: p.shards.len() });
    source.manifests(dest, p)?;
    if opts.events.finished(Step::Manifests) {
        return stopped;
    }
    RejectsLog::complete(&dest.work(0).rejects(), p.rejects_bytes)?;
    if opts.events.finished(Step::Rejects) {
        return stopped;
    }
    let report = source.report(dest, p, stats)?;
    facekit_io::durable::write_json(dest.work(0).report(), &report)?;
    if !dest.finish(opts.events)? {
        return stopped;
    }
    Ok(End::Done(Box::new(report)))
}

/// The report a finished run wrote.
fn read_report<R: DeserializeOwned>(path: &Path, tool: &str) -> Result<R> {
    let text = facekit_io::bounded::read(path, facekit_io::bounded::STATE)?;
    serde_json::from_slice(&text).with_context(|| format!("{tool} report {} is damaged", path.display()))
}
