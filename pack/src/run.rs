//! The pack itself: [`pack`] runs the pipeline described in the crate's documentation, from
//! validated options to finished datasets (or a resumable checkpoint), and [`complete`] is its
//! crash-safe last part.

use crate::align::{ChipSpec, Template};
use crate::align::{DetectorKind, FaceAligner};
use crate::checkpoint::{self, Checkpoint, Settings, PROGRESS_FORMAT};
use crate::encode::Chroma;
use crate::inputs::{self, InputFile};
use crate::layout::Plan;
use crate::rejects::RejectsLog;
use crate::replace::{base_name, remove_file, Destination};
use crate::report::{Counters, PackReport, Reject};
use crate::split::{path_hash, SplitRule};
use crate::worker::{self, Detector, Outcome, WorkerConfig};
use crate::{attributes, landmarks};
use anyhow::{bail, Context, Result};
use facekit_io::StopFlag;
use facekit_shard::manifest::{AlignmentInfo, EncodingInfo, LabelMap, ShardInfo};
use facekit_shard::{DatasetPaths, DatasetWriter, Encoding, Manifest};
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

/// Suffix of the validation dataset's name (`celeb` -> `celeb.valid`).
pub const VALID_SUFFIX: &str = ".valid";
/// Test-only: stops a pack after this many checkpoints, as a crash would (tests of `--resume`).
const STOP_AFTER_ENV: &str = "FACEKIT_PACK_STOP_AFTER_SHARDS";
/// Test-only: ends the process (exit 137, as `kill -9`) right after this step of a finishing pack:
/// `checkpoint`, `manifests` or `rejects`; or, of a pack or import replacing a finished dataset,
/// `replacing` (the old dataset hidden, the new one not all in place).
const CRASH_IN_FINISH_ENV: &str = "FACEKIT_TEST_PACK_CRASH_AFTER";

pub(crate) fn crash_point(step: &str) {
    if std::env::var(CRASH_IN_FINISH_ENV).is_ok_and(|v| v == step) {
        std::process::exit(137);
    }
}

/// Everything `facekit pack` needs.
#[derive(Debug, Clone)]
pub struct PackOptions {
    /// Input roots.
    pub roots: Vec<PathBuf>,
    /// Output dataset (`training/celeb`).
    pub output: PathBuf,
    /// The detector, for photos not aligned from `landmarks` (needs feature `dlib`).
    pub detector: DetectorKind,
    /// dlib models folder (`None`: `$FACEKIT_MODELS`, else `./models`).
    pub models: Option<PathBuf>,
    /// `--landmarks` file: every face aligned from it to the ArcFace template, no detection.
    pub landmarks: Option<PathBuf>,
    /// `--attributes` file.
    pub attributes: Option<PathBuf>,
    /// `--utkface-labels`.
    pub utkface_labels: bool,
    /// Chip geometry.
    pub spec: ChipSpec,
    /// Record encoding.
    pub encoding: Encoding,
    /// JPEG quality (1-100).
    pub quality: u8,
    /// JPEG chroma subsampling.
    pub chroma: Chroma,
    /// Target shard size in bytes.
    pub shard_size: u64,
    /// Worker threads.
    pub threads: usize,
    /// `--valid-fraction`.
    pub valid_fraction: f64,
    /// `--valid-per-class`.
    pub valid_per_class: usize,
    /// Continue an interrupted pack.
    pub resume: bool,
    /// Replace a finished dataset of the same name, once the new one is complete.
    pub overwrite: bool,
    /// Show a progress bar.
    pub progress: bool,
    /// Set (by Ctrl-C or SIGTERM) to stop at the next chunk; the last checkpoint stays resumable.
    pub stop: StopFlag,
}

/// How a pack ended.
#[derive(Debug)]
pub enum PackEnd {
    /// All input processed; the report was written.
    Done(Box<PackReport>),
    /// Stopped early; `checkpoints` shards are resumable with `--resume`.
    Interrupted {
        /// Training shards completed and recorded in the progress file.
        shards: usize,
    },
}

/// Packs the roots into the output dataset(s). A finished dataset of the same name is replaced
/// only with `overwrite`, and only once the new one is complete (see [`crate::replace`]).
pub fn pack(opts: &PackOptions) -> Result<PackEnd> {
    let started = Instant::now();
    validate(opts)?;
    let main = DatasetPaths::new(&opts.output);
    let valid = main.with_suffix(VALID_SUFFIX);
    // Before anything is read or removed: one writer per dataset name (the validation dataset's
    // too, which a pack of this name rewrites).
    let _locks = [
        facekit_io::lock::exclusive(&main.lock(), &format!("dataset {}", base_name(&main)))?,
        facekit_io::lock::exclusive(&valid.lock(), &format!("dataset {}", base_name(&valid)))?,
    ];
    let dest = Destination::choose(&main, &[VALID_SUFFIX], opts.resume, opts.overwrite, "pack")?;
    if dest.committing() {
        dest.finish()?;
        return Ok(PackEnd::Done(Box::new(read_report(&main.report())?)));
    }
    let (paths, vpaths) = (dest.work(0).clone(), dest.work(1).clone());
    let plan = Plan::scan(&opts.roots)?;
    // Before anything is written or removed: a missing model must not cost the old dataset.
    let detectors = DetectorPool::new(opts)?;
    let landmarks = opts.landmarks.as_deref().map(landmarks::LandmarkTable::read).transpose()?;
    let attributes = opts.attributes.as_deref().map(attributes::AttributeTable::read).transpose()?;

    // First pass over names only: the total for the progress bar and the per-class split cut-offs.
    let mut rule = SplitRule::new(opts.valid_fraction, opts.valid_per_class, plan.classes);
    // It also fingerprints the input (names, folders, sizes, modification times), so that a
    // resume refuses an input that changed under it.
    let mut files = 0u64;
    let mut fingerprint = checkpoint::InputFingerprint::new();
    for f in inputs::walk(&plan) {
        files += 1;
        fingerprint.add(&f);
        if opts.valid_per_class > 0 {
            rule.observe(f.class, path_hash(&f.record_path));
        }
    }
    rule.seal();
    let settings = settings(opts, &plan, files, fingerprint.finish())?;

    let want_valid = !rule.is_none();
    let source_names = plan.sources.iter().map(|s| s.name.clone());
    for p in [&paths, &vpaths] {
        // The lock proves that no other facekit writes here: every temporary file is stale.
        let n = p.remove_stale_temps()?;
        if n > 0 {
            eprintln!(
                "facekit pack: removed {n} temporary file(s) left in {} by an interrupted run",
                p.dir().display()
            );
        }
    }
    let resume = resume_point(opts, &paths, &vpaths, &settings)?;
    if let Some(cp) = resume.as_ref().filter(|cp| cp.report.is_some()) {
        // The earlier run had written every shard and stopped in its bookkeeping: complete that,
        // and leave the finished dataset as it is.
        return complete(opts, &plan, &dest, want_valid, cp).map(|r| PackEnd::Done(Box::new(r)));
    }
    let mut sink = match resume {
        Some(cp) => Sink {
            train: DatasetWriter::resume(paths.clone(), opts.shard_size, cp.train_shards)?,
            valid: if want_valid {
                Some(DatasetWriter::resume(vpaths.clone(), opts.shard_size, cp.valid_shards)?)
            } else {
                None
            },
            counters: cp.counters,
            rejects: RejectsLog::resume(&paths.rejects(), cp.rejects_bytes)?,
            resumed_at: cp.consumed,
            checkpoints: 0,
        },
        None => {
            for p in [paths.progress(), paths.report(), paths.rejects()] {
                remove_file(&p)?;
            }
            // A validation dataset left by an earlier pack of this name would no longer match.
            vpaths.remove_existing()?;
            Sink {
                train: DatasetWriter::create(paths.clone(), opts.shard_size)?,
                valid: if want_valid { Some(DatasetWriter::create(vpaths.clone(), opts.shard_size)?) } else { None },
                counters: Counters::new(source_names),
                rejects: RejectsLog::create(&paths.rejects())?,
                resumed_at: 0,
                checkpoints: 0,
            }
        }
    };
    let resumed_at = sink.resumed_at;

    let cfg = WorkerConfig {
        spec: opts.spec,
        encoding: opts.encoding,
        quality: opts.quality,
        chroma: opts.chroma,
        landmarks,
        attributes,
        utkface_labels: opts.utkface_labels,
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.threads)
        .thread_name(|i| format!("facekit-pack-{i}"))
        .build()
        .context("cannot start worker threads")?;
    let bar = facekit_io::progress::items(files, "images");
    if !opts.progress {
        facekit_io::progress::hide(&bar);
    }
    bar.set_position(resumed_at);
    bar.reset_eta();
    let stop_after: Option<usize> = std::env::var(STOP_AFTER_ENV).ok().and_then(|v| v.parse().ok());
    let writer_ctx = WriterCtx { rule: &rule, settings: &settings, progress: paths.progress(), stop_after };
    // Enough work per chunk to keep every thread busy, small enough to bound memory.
    let chunk_size = opts.threads.max(1) * 32;

    let finished = std::thread::scope(|s| -> Result<Option<Sink>> {
        let (tx, rx) = crossbeam_channel::bounded::<Vec<(InputFile, Outcome)>>(2);
        let writer = s.spawn(move || -> Result<Option<Sink>> {
            for chunk in rx {
                for (f, outcome) in chunk {
                    if !sink.accept(&writer_ctx, &f, outcome)? {
                        return Ok(None);
                    }
                }
            }
            Ok(Some(sink))
        });
        let mut stream = inputs::walk(&plan).skip(resumed_at as usize);
        loop {
            if opts.stop.is_set() {
                break;
            }
            let chunk: Vec<InputFile> = stream.by_ref().take(chunk_size).collect();
            if chunk.is_empty() {
                break;
            }
            let outcomes: Vec<Outcome> = pool.install(|| {
                chunk
                    .par_iter()
                    .map_init(|| detectors.take(), |d, f| worker::process(&cfg, f, d.detector.as_ref()))
                    .collect()
            });
            bar.inc(chunk.len() as u64);
            if tx.send(chunk.into_iter().zip(outcomes).collect()).is_err() {
                break; // the writer stopped (error or test stop); its result says why
            }
        }
        drop(tx);
        let result = writer.join().map_err(|_| anyhow::anyhow!("the pack writer thread panicked"))?;
        // A stopped pack must not be finished: its last chunks were never read.
        if opts.stop.is_set() {
            return result.map(|_| None);
        }
        result
    });
    bar.finish_and_clear();
    let Some(sink) = finished? else {
        let shards = Checkpoint::read(&paths.progress()).map(|c| c.train_shards.len()).unwrap_or(0);
        return Ok(PackEnd::Interrupted { shards });
    };
    let ctx = WriterCtx { rule: &rule, settings: &settings, progress: paths.progress(), stop_after: None };
    let report = sink.finish(&ctx, opts, &plan, &dest, want_valid, started, files - resumed_at)?;
    Ok(PackEnd::Done(Box::new(report)))
}

/// The report a finished pack wrote.
fn read_report(path: &Path) -> Result<PackReport> {
    let text = facekit_io::bounded::read(path, facekit_io::bounded::STATE)?;
    serde_json::from_slice(&text).with_context(|| format!("pack report {} is damaged", path.display()))
}

fn validate(opts: &PackOptions) -> Result<()> {
    if opts.roots.is_empty() {
        bail!("no input folder given");
    }
    for r in &opts.roots {
        if !r.is_dir() {
            bail!("input folder {} does not exist or is not a folder", r.display());
        }
    }
    opts.spec.validate()?;
    if opts.spec.size > u16::MAX as u32 {
        bail!("chip size {} does not fit a record", opts.spec.size);
    }
    if !(1..=100).contains(&opts.quality) {
        bail!("--quality {} is outside 1..=100", opts.quality);
    }
    if !(0.0..1.0).contains(&opts.valid_fraction) {
        bail!("--valid-fraction {} is outside [0, 1)", opts.valid_fraction);
    }
    if opts.threads == 0 {
        bail!("--threads must be at least 1");
    }
    if opts.landmarks.is_none() && !crate::align::dlib::AVAILABLE {
        bail!("this facekit was built without face detection (feature `dlib`): give --landmarks");
    }
    if opts.output.file_name().is_none() {
        bail!("output {} has no dataset name", opts.output.display());
    }
    Ok(())
}

fn settings(opts: &PackOptions, plan: &Plan, files: u64, input_sha256: String) -> Result<Settings> {
    let roots = plan
        .roots
        .iter()
        .map(|r| r.dir.canonicalize().map(|p| p.display().to_string()))
        .collect::<std::io::Result<Vec<_>>>()
        .context("cannot resolve an input folder")?;
    Ok(Settings {
        roots,
        files,
        input_sha256,
        classes: plan.classes,
        detector: detector_name(opts).into(),
        size: opts.spec.size,
        padding: opts.spec.padding,
        encoding: opts.encoding,
        quality: opts.quality,
        chroma: opts.chroma.name().into(),
        shard_size: opts.shard_size,
        valid_fraction: opts.valid_fraction,
        valid_per_class: opts.valid_per_class,
        landmarks_sha256: opts.landmarks.as_deref().map(checkpoint::file_sha256).transpose()?,
        attributes_sha256: opts.attributes.as_deref().map(checkpoint::file_sha256).transpose()?,
        utkface_labels: opts.utkface_labels,
        tool_version: env!("CARGO_PKG_VERSION").into(),
    })
}

fn detector_name(opts: &PackOptions) -> &'static str {
    if opts.landmarks.is_some() {
        return "landmarks-file";
    }
    opts.detector.name()
}

/// The checkpoint to continue from, when `--resume` is asked and one exists and still matches.
fn resume_point(
    opts: &PackOptions,
    paths: &DatasetPaths,
    vpaths: &DatasetPaths,
    now: &Settings,
) -> Result<Option<Checkpoint>> {
    let progress = paths.progress();
    if !opts.resume {
        return Ok(None);
    }
    if !progress.is_file() {
        eprintln!("facekit pack: nothing to resume ({} does not exist); packing from the start", progress.display());
        return Ok(None);
    }
    let cp = Checkpoint::read(&progress)?;
    cp.check_consistent().with_context(|| {
        format!("progress file {} cannot be trusted; pack again without --resume", progress.display())
    })?;
    let diffs = cp.settings.differences(now);
    if !diffs.is_empty() {
        bail!(
            "cannot resume {}: the settings or inputs changed since it was started: {}. Pack again without --resume",
            paths.manifest().with_extension("").with_extension("").display(),
            diffs.join("; ")
        );
    }
    checkpoint::check_shards(paths, &cp.train_shards).context("cannot resume; pack again without --resume")?;
    checkpoint::check_shards(vpaths, &cp.valid_shards).context("cannot resume; pack again without --resume")?;
    if cp.report.is_some() {
        // Written only once both datasets were complete: their manifests must list exactly the
        // checkpoint's shards, which were just checked.
        for (p, shards) in [(paths, &cp.train_shards), (vpaths, &cp.valid_shards)] {
            if !p.manifest().exists() {
                continue; // stopped before writing it: written now
            }
            let m = Manifest::read(&p.manifest()).with_context(|| {
                format!("cannot resume: the finished pack's manifest {} is unreadable", p.manifest().display())
            })?;
            if &m.shards != shards {
                bail!(
                    "cannot resume: manifest {} lists other shards than the progress file {}",
                    p.manifest().display(),
                    progress.display()
                );
            }
        }
        eprintln!("facekit pack: {} is complete; finishing the report the earlier run did not write", base_name(paths));
        return Ok(Some(cp));
    }
    if paths.manifest().exists() {
        bail!(
            "cannot resume: {} has a manifest, so a finished dataset is there, but the progress file {} belongs to an unfinished pack; \
             nothing was changed. Remove the progress file to keep the dataset, or pack again without --resume",
            base_name(paths),
            progress.display()
        );
    }
    eprintln!(
        "facekit pack: resuming after {} of {} files ({} shard(s) done)",
        cp.consumed,
        now.files,
        cp.train_shards.len()
    );
    Ok(Some(cp))
}

/// Read-only context of the writer thread.
struct WriterCtx<'a> {
    rule: &'a SplitRule,
    settings: &'a Settings,
    progress: PathBuf,
    stop_after: Option<usize>,
}

/// The writer thread's state: both datasets, counts and rejects, in input order.
struct Sink {
    train: DatasetWriter,
    valid: Option<DatasetWriter>,
    counters: Counters,
    rejects: RejectsLog,
    resumed_at: u64,
    checkpoints: usize,
}

impl Sink {
    /// Takes the outcome of input file `f`; false when the pack must stop here (test hook).
    fn accept(&mut self, ctx: &WriterCtx, f: &InputFile, outcome: Outcome) -> Result<bool> {
        match outcome {
            Outcome::Rejected(reason, detail) => {
                self.counters.reject(f.source, reason);
                self.rejects.push(&Reject { path: f.file.display().to_string(), reason, detail })?;
            }
            Outcome::Packed(p) => {
                let held_out = self.valid.is_some() && ctx.rule.is_valid(f.class, path_hash(&f.record_path));
                if held_out {
                    let v = self.valid.as_mut().expect("checked above");
                    v.push(&p.record).with_context(|| format!("writing the record of {}", f.file.display()))?;
                } else if self
                    .train
                    .push(&p.record)
                    .with_context(|| format!("writing the record of {}", f.file.display()))?
                    .is_some()
                {
                    // A training shard is complete and holds everything before `f`: close the
                    // validation shard too, so both datasets are complete up to the same file,
                    // and record that point before counting `f`.
                    if let Some(v) = self.valid.as_mut() {
                        v.flush_shard()?;
                    }
                    self.checkpoint(ctx, f.index)?;
                    if ctx.stop_after.is_some_and(|n| self.checkpoints >= n) {
                        return Ok(false);
                    }
                }
                self.counters.pack(f.source, held_out);
                self.counters.multiple_faces += u64::from(p.faces > 1);
                self.counters.upsampled += u64::from(p.upsampled);
                self.counters.from_landmarks += u64::from(p.from_landmarks);
                self.counters.with_attributes +=
                    u64::from(p.record.labels.gender.is_some() || p.record.labels.age.is_some());
            }
        }
        Ok(true)
    }

    fn checkpoint(&mut self, ctx: &WriterCtx, consumed: u64) -> Result<()> {
        // The list must be durable before a checkpoint that counts on its length.
        let rejects_bytes = self.rejects.sync()?;
        let cp = Checkpoint {
            format: PROGRESS_FORMAT.into(),
            settings: ctx.settings.clone(),
            consumed,
            train_shards: self.train.shards().to_vec(),
            valid_shards: self.valid.as_ref().map(|v| v.shards().to_vec()).unwrap_or_default(),
            counters: self.counters.clone(),
            rejects_bytes,
            report: None,
        };
        cp.write(&ctx.progress)?;
        self.checkpoints += 1;
        Ok(())
    }

    /// Completes the last shards, records the finished state in the progress file, then writes
    /// the manifests, the rejects list and the report ([`complete`]).
    #[allow(clippy::too_many_arguments)]
    fn finish(
        mut self,
        ctx: &WriterCtx,
        opts: &PackOptions,
        plan: &Plan,
        dest: &Destination,
        want_valid: bool,
        started: Instant,
        processed: u64,
    ) -> Result<PackReport> {
        self.train.flush_shard()?;
        if let Some(v) = self.valid.as_mut() {
            v.flush_shard()?;
        }
        let elapsed_s = started.elapsed().as_secs_f64();
        let made = self.counters.packed > 0;
        let report = PackReport {
            dataset: dest.shown_name(made),
            valid_dataset: want_valid.then(|| base_name(if made { dest.final_paths(1) } else { dest.work(1) })),
            counters: self.counters.clone(),
            processed_this_run: processed,
            elapsed_s,
            images_per_s: if elapsed_s > 0.0 { processed as f64 / elapsed_s } else { 0.0 },
            threads: opts.threads,
            resumed: self.resumed_at > 0,
        };
        // From this checkpoint on, every shard is complete and a resume only redoes what follows.
        let cp = Checkpoint {
            format: PROGRESS_FORMAT.into(),
            settings: ctx.settings.clone(),
            consumed: ctx.settings.files,
            train_shards: self.train.shards().to_vec(),
            valid_shards: self.valid.as_ref().map(|v| v.shards().to_vec()).unwrap_or_default(),
            counters: self.counters,
            rejects_bytes: self.rejects.sync()?,
            report: Some(report),
        };
        cp.write(&ctx.progress)?;
        crash_point("checkpoint");
        drop(self.rejects);
        complete(opts, plan, dest, want_valid, &cp)
    }
}

/// The steps after the final checkpoint, each one safe to redo after a crash: the manifests
/// (validation first, training last; one already in place and listing these shards is kept), the
/// rejects list under its final name, the report, and last [`Destination::finish`] (the progress
/// file's removal, or the replacement of a finished dataset).
fn complete(
    opts: &PackOptions,
    plan: &Plan,
    dest: &Destination,
    want_valid: bool,
    cp: &Checkpoint,
) -> Result<PackReport> {
    let (paths, vpaths) = (dest.work(0), want_valid.then(|| dest.work(1)));
    let report = cp.report.clone().context("the progress file records no finished pack")?;
    let c = &report.counters;
    if c.packed > 0 {
        let labels = plan.label_map();
        let encoding = EncodingInfo {
            format: opts.encoding,
            quality: (opts.encoding == Encoding::Jpeg).then_some(opts.quality),
            chroma: (opts.encoding == Encoding::Jpeg).then(|| opts.chroma.name().to_string()),
            width: opts.spec.size,
            height: opts.spec.size,
        };
        let manifest = |per_source: Vec<u64>| {
            Manifest::new(plan.classes, plan.source_infos(&per_source), Some(alignment_info(opts)), encoding.clone())
        };
        if let Some(v) = vpaths {
            let m = manifest(c.per_source.iter().map(|s| s.packed_valid).collect());
            write_manifest_unless_done(v, &cp.valid_shards, m, &labels, opts.shard_size)?;
        }
        let m = manifest(c.per_source.iter().map(|s| s.packed_train).collect());
        write_manifest_unless_done(paths, &cp.train_shards, m, &labels, opts.shard_size)?;
    }
    crash_point("manifests");
    RejectsLog::complete(&paths.rejects(), cp.rejects_bytes)?;
    crash_point("rejects");
    report.write(&paths.report())?;
    dest.finish()?;
    Ok(report)
}

fn write_manifest_unless_done(
    p: &DatasetPaths,
    shards: &[ShardInfo],
    m: Manifest,
    labels: &LabelMap,
    shard_size: u64,
) -> Result<()> {
    if Manifest::read(&p.manifest()).is_ok_and(|done| done.shards == shards) && p.labels().is_file() {
        return Ok(());
    }
    DatasetWriter::completed(p.clone(), shard_size, shards.to_vec()).finish(m, labels)?;
    Ok(())
}

/// The manifest's description of how faces were aligned.
pub fn alignment_info(opts: &PackOptions) -> AlignmentInfo {
    let (method, template) = if opts.landmarks.is_some() {
        ("arcface5-similarity-warp", Template::ArcFace5)
    } else {
        ("dlib-get-face-chip", Template::Dlib5)
    };
    AlignmentInfo {
        method: method.into(),
        detector: detector_name(opts).into(),
        size: opts.spec.size,
        padding: opts.spec.padding,
        template: template.name().into(),
        template_points: template.points(&opts.spec).to_vec(),
        interpolation: "bilinear".into(),
    }
}

/// Face detectors for the worker threads: made on first need, then reused, one per concurrent task
/// (each is `Send` but not `Sync`).
struct DetectorPool {
    free: Mutex<Vec<Detector>>,
    /// Models folder, detector and chip of the detectors to make; `None` with `--landmarks`.
    recipe: Option<(Option<PathBuf>, DetectorKind, ChipSpec)>,
}

/// A detector borrowed from the pool, returned when dropped.
struct Borrowed<'a> {
    pool: &'a DetectorPool,
    detector: Option<Detector>,
}

impl Drop for Borrowed<'_> {
    fn drop(&mut self) {
        if let Some(d) = self.detector.take() {
            self.pool.free.lock().unwrap_or_else(|p| p.into_inner()).push(d);
        }
    }
}

impl DetectorPool {
    /// A pool for `opts`; empty (no detection) when faces come from `--landmarks`. One detector is
    /// made now, so that a missing model fails the pack at once instead of every image.
    fn new(opts: &PackOptions) -> Result<Self> {
        let recipe = opts.landmarks.is_none().then(|| (opts.models.clone(), opts.detector, opts.spec));
        let pool = DetectorPool { free: Mutex::new(Vec::new()), recipe };
        if pool.recipe.is_some() {
            let first = pool.make()?;
            pool.free.lock().unwrap_or_else(|p| p.into_inner()).push(first);
        }
        Ok(pool)
    }

    fn make(&self) -> Result<Detector> {
        let (models, kind, spec) = self.recipe.as_ref().expect("only detection pools make detectors");
        FaceAligner::new(models.as_deref(), *kind, *spec)
    }

    /// Borrows a detector (`None` inside when the pack uses landmarks only).
    fn take(&self) -> Borrowed<'_> {
        let mut detector = self.free.lock().unwrap_or_else(|p| p.into_inner()).pop();
        if detector.is_none() && self.recipe.is_some() {
            // The models loaded once already, so a failure here is not the user's data.
            detector = Some(self.make().expect("face models loaded before cannot load now"));
        }
        Borrowed { pool: self, detector }
    }
}
