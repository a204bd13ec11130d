//! The pack itself: [`pack`] validates the options and runs the photos of the input roots
//! through the [`crate::pipeline`] as a [`PhotoSource`]: the stream of input files in one sorted
//! order, each aligned into a record or rejected, the training/validation split, the pack's
//! counters, settings and input fingerprint, its manifests and report.

use crate::align::{Alignment, ChipSpec, Template, METHOD_ARCFACE};
use crate::align::{DetectorKind, FaceAligner};
use crate::checkpoint::{self, Checkpoint, Settings, PROGRESS_FORMAT};
use crate::encode::Chroma;
use crate::inputs::{self, InputFile};
use crate::layout::Plan;
use crate::part::{Boundaries, Part};
use crate::pipeline::{self, Destination, End, Observer, RunOptions, RunStats, Source, Verdict};
use crate::replace::base_name;
use crate::report::{Counters, PackReport, Reject};
use crate::split::{path_hash, SplitRule};
use crate::worker::{self, Detector, Outcome, WorkerConfig};
use crate::{attributes, landmarks, RejectReason};
use anyhow::{bail, Context, Result};
use facekit_io::StopFlag;
use facekit_shard::manifest::{AlignmentInfo, EncodingInfo, LabelMap, PartInfo, ShardInfo};
use facekit_shard::{DatasetPaths, DatasetWriter, Encoding, Manifest};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Suffix of the validation dataset's name (`celeb` -> `celeb.valid`).
pub const VALID_SUFFIX: &str = ".valid";
/// Everything `facekit pack` needs.
#[derive(Debug, Clone)]
pub struct PackOptions {
    /// Input roots.
    pub roots: Vec<PathBuf>,
    /// Output dataset (`training/celeb`).
    pub output: PathBuf,
    /// The detector, for photos not aligned from `landmarks` (needs feature `dlib`).
    pub detector: DetectorKind,
    /// How detected faces are aligned (faces from `landmarks` are always ArcFace-aligned).
    pub alignment: Alignment,
    /// dlib models folder (`None`: `./models`).
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
    /// Set (by Ctrl-C or SIGTERM) to stop before the next photo; the last checkpoint stays resumable.
    pub stop: StopFlag,
    /// `--part K/N`: pack only this part of the input (whole identities), for a later `facekit merge`.
    pub part: Option<Part>,
    /// Where notices go ([`crate::pipeline::Event`]); it may also stop the pack at a checkpoint or
    /// a finishing step.
    pub events: Observer,
}

/// How a pack ended: `Done` with the report, or `Interrupted` after some complete shards.
pub type PackEnd = End<PackReport>;

/// Packs the roots into the output dataset(s). A finished dataset of the same name is replaced
/// only with `overwrite`, and only once the new one is complete (see [`crate::replace`]).
pub fn pack(opts: &PackOptions) -> Result<PackEnd> {
    validate(opts)?;
    let run = RunOptions {
        output: &opts.output,
        siblings: &[VALID_SUFFIX],
        tool: "pack",
        unit: "images",
        shard_size: opts.shard_size,
        threads: opts.threads,
        resume: opts.resume,
        overwrite: opts.overwrite,
        progress: opts.progress,
        stop: &opts.stop,
        events: &opts.events,
    };
    pipeline::run(&run, || PhotoSource::new(opts))
}

/// The photos of a pack, as a [`Source`] of the pipeline.
pub(crate) struct PhotoSource<'a> {
    opts: &'a PackOptions,
    plan: Plan,
    rule: SplitRule,
    settings: Settings,
    cfg: WorkerConfig,
    detectors: DetectorPool,
    /// The stream positions this pack processes: all of them, or its `--part`'s.
    range: (u64, u64),
}

impl<'a> PhotoSource<'a> {
    /// Scans the roots, reads the tables and loads the detector: everything is checked before
    /// anything is written.
    fn new(opts: &'a PackOptions) -> Result<Self> {
        let plan = Plan::scan(&opts.roots)?;
        // Before anything is written or removed: a missing model must not cost the old dataset.
        let detectors = DetectorPool::new(opts)?;
        let landmarks = opts.landmarks.as_deref().map(landmarks::LandmarkTable::read).transpose()?;
        let attributes = opts.attributes.as_deref().map(attributes::AttributeTable::read).transpose()?;
        // First pass over names only: the total for the progress bar and the per-class split
        // cut-offs. It also fingerprints the input (names, folders, sizes, modification times),
        // so that a resume refuses an input that changed under it.
        let mut rule = SplitRule::new(opts.valid_fraction, opts.valid_per_class, plan.classes);
        let mut files = 0u64;
        let mut fingerprint = checkpoint::InputFingerprint::new();
        let mut bounds = Boundaries::default();
        for f in inputs::walk(&plan) {
            files += 1;
            fingerprint.add(&f);
            if opts.part.is_some() {
                bounds.observe(f.class);
            }
            if opts.valid_per_class > 0 {
                rule.observe(f.class, path_hash(&f.record_path));
            }
        }
        rule.seal();
        let range = opts.part.map_or((0, files), |p| bounds.range(p));
        let settings = settings(opts, &plan, files, fingerprint.finish())?;
        let cfg = WorkerConfig {
            spec: opts.spec,
            encoding: opts.encoding,
            quality: opts.quality,
            chroma: opts.chroma,
            landmarks,
            attributes,
            utkface_labels: opts.utkface_labels,
        };
        Ok(PhotoSource { opts, plan, rule, settings, cfg, detectors, range })
    }
}

/// What the pack's counters learn from one photo.
pub(crate) enum PhotoTally {
    /// Rejected, from source `source`.
    Rejected(u16, RejectReason),
    /// Packed, from source `source`.
    Packed {
        /// Source number.
        source: u16,
        /// Held out into the validation dataset.
        held_out: bool,
        /// More than one face was found.
        multiple_faces: bool,
        /// Found only after upsampling.
        upsampled: bool,
        /// Aligned from `--landmarks`.
        from_landmarks: bool,
        /// Got a gender or age label.
        with_attributes: bool,
    },
}

impl Source for PhotoSource<'_> {
    type Item = InputFile;
    type Worker = Option<Detector>;
    type Outcome = Outcome;
    type Tally = PhotoTally;
    type Input = Settings;
    type Counters = Counters;
    type Final = Option<PackReport>;
    type Report = PackReport;

    const FORMAT: &'static str = PROGRESS_FORMAT;

    fn input(&self) -> &Settings {
        &self.settings
    }

    fn total(&self) -> u64 {
        self.range.1 - self.range.0
    }

    fn wants_valid(&self) -> bool {
        !self.rule.is_none()
    }

    fn counters(&self) -> Counters {
        Counters::new(self.plan.sources.iter().map(|s| s.name.clone()))
    }

    fn items(&self, from: u64) -> Box<dyn Iterator<Item = InputFile> + Send + '_> {
        let (start, end) = self.range;
        let skip = start.saturating_add(from);
        Box::new(inputs::walk(&self.plan).skip(skip as usize).take(end.saturating_sub(skip) as usize))
    }

    /// Photos are counted, not weighed: a photo's memory is bounded by the decoder's budgets.
    fn cost(&self, _: &InputFile) -> u64 {
        1
    }

    /// Enough photos in flight to keep every thread busy, few enough to bound memory.
    fn budget(&self) -> u64 {
        self.opts.threads.max(1) as u64 * PHOTOS_IN_FLIGHT_PER_THREAD
    }

    fn worker(&self) -> Option<Detector> {
        self.detectors.take()
    }

    fn process(&self, detector: &mut Option<Detector>, f: &InputFile) -> Outcome {
        worker::process(&self.cfg, f, detector.as_ref())
    }

    fn name(&self, f: &InputFile) -> String {
        format!("the record of {}", f.file.display())
    }

    fn judge(&self, f: &InputFile, outcome: Outcome) -> Verdict<PhotoTally> {
        match outcome {
            Outcome::Rejected(reason, detail) => Verdict::Reject(
                Reject { path: f.file.display().to_string(), reason, detail },
                PhotoTally::Rejected(f.source, reason),
            ),
            Outcome::Packed(p) => {
                let held_out = self.wants_valid() && self.rule.is_valid(f.class, path_hash(&f.record_path));
                let tally = PhotoTally::Packed {
                    source: f.source,
                    held_out,
                    multiple_faces: p.faces > 1,
                    upsampled: p.upsampled,
                    from_landmarks: p.from_landmarks,
                    with_attributes: p.record.labels.gender.is_some() || p.record.labels.age.is_some(),
                };
                Verdict::Keep { record: Box::new(p.record), valid: held_out, tally }
            }
        }
    }

    fn count(&self, c: &mut Counters, tally: PhotoTally) {
        match tally {
            PhotoTally::Rejected(source, reason) => c.reject(source, reason),
            PhotoTally::Packed { source, held_out, multiple_faces, upsampled, from_landmarks, with_attributes } => {
                c.pack(source, held_out);
                c.multiple_faces += u64::from(multiple_faces);
                c.upsampled += u64::from(upsampled);
                c.from_landmarks += u64::from(from_landmarks);
                c.with_attributes += u64::from(with_attributes);
            }
        }
    }

    fn check(&self, cp: &Checkpoint, file: &Path, dataset: &DatasetPaths) -> Result<()> {
        checkpoint::check_consistent(cp).with_context(|| {
            format!("progress file {} cannot be trusted; pack again without --resume", file.display())
        })?;
        let diffs = cp.input.differences(&self.settings);
        if !diffs.is_empty() {
            bail!(
                "cannot resume {}: the settings or inputs changed since it was started: {}. Pack again without --resume",
                base_name(dataset),
                diffs.join("; ")
            );
        }
        Ok(())
    }

    fn finished(&self, dest: &Destination, cp: &Checkpoint, run: &RunStats) -> Option<PackReport> {
        let elapsed_s = run.started.elapsed().as_secs_f64();
        let made = cp.counters.packed > 0;
        Some(PackReport {
            dataset: dest.shown_name(made),
            valid_dataset: self.wants_valid().then(|| base_name(if made { dest.final_paths(1) } else { dest.work(1) })),
            counters: cp.counters.clone(),
            processed_this_run: run.processed,
            elapsed_s,
            images_per_s: if elapsed_s > 0.0 { run.processed as f64 / elapsed_s } else { 0.0 },
            threads: run.threads,
            resumed: run.resumed,
        })
    }

    /// The manifests, validation first, training last.
    fn manifests(&self, dest: &Destination, cp: &Checkpoint) -> Result<()> {
        let opts = self.opts;
        let c = &cp.counters;
        if c.packed == 0 {
            return Ok(());
        }
        let plan = &self.plan;
        let labels = plan.label_map();
        let encoding = EncodingInfo {
            format: opts.encoding,
            quality: (opts.encoding == Encoding::Jpeg).then_some(opts.quality),
            chroma: (opts.encoding == Encoding::Jpeg).then(|| opts.chroma.name().to_string()),
            width: opts.spec.size,
            height: opts.spec.size,
        };
        let part = opts.part.map(|p| PartInfo {
            index: p.index,
            count: p.count,
            input_sha256: self.settings.input_sha256.clone(),
            input_files: self.settings.files,
            first_file: self.range.0,
            end_file: self.range.1,
        });
        let manifest = |per_source: Vec<u64>| {
            let mut m = Manifest::new(
                plan.classes,
                plan.source_infos(&per_source),
                Some(alignment_info(opts)),
                encoding.clone(),
            );
            m.part = part.clone();
            m
        };
        if self.wants_valid() {
            let m = manifest(c.per_source.iter().map(|s| s.packed_valid).collect());
            write_manifest_unless_done(dest.work(1), &cp.valid_shards, m, &labels, opts.shard_size)?;
        }
        let m = manifest(c.per_source.iter().map(|s| s.packed_train).collect());
        write_manifest_unless_done(dest.work(0), &cp.shards, m, &labels, opts.shard_size)
    }

    fn report(&self, _: &Destination, cp: &Checkpoint, _: &RunStats) -> Result<PackReport> {
        cp.finished.clone().context("the progress file records no finished pack")
    }
}

/// Photos in flight per worker thread (the pack's [`Source::budget`]).
const PHOTOS_IN_FLIGHT_PER_THREAD: u64 = 96;

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
        alignment: opts.alignment.name().into(),
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
        part: opts.part.map(|p| p.to_string()),
        tool_version: env!("CARGO_PKG_VERSION").into(),
    })
}

fn detector_name(opts: &PackOptions) -> &'static str {
    if opts.landmarks.is_some() {
        return "landmarks-file";
    }
    opts.detector.name()
}

/// Writes the manifest and label map of a dataset whose shards are complete, unless a run
/// stopped after writing them already (a manifest listing the same shards, and a label map).
pub(crate) fn write_manifest_unless_done(
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
pub(crate) fn alignment_info(opts: &PackOptions) -> AlignmentInfo {
    let (method, template) = if opts.landmarks.is_some() {
        (METHOD_ARCFACE, Template::ArcFace5)
    } else {
        (opts.alignment.method(), opts.alignment.template())
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

/// Face detectors for the worker threads: one per thread that needs one (each is `Send` but not
/// `Sync`), the first made before the pack starts, so that a missing model fails the pack at once
/// instead of every image.
struct DetectorPool {
    first: Mutex<Option<Detector>>,
    /// Models folder, detector, chip and alignment of the detectors to make; `None` with `--landmarks`.
    recipe: Option<(Option<PathBuf>, DetectorKind, ChipSpec, Alignment)>,
}

impl DetectorPool {
    /// A pool for `opts`; empty (no detection) when faces come from `--landmarks`.
    fn new(opts: &PackOptions) -> Result<Self> {
        let recipe = opts.landmarks.is_none().then(|| (opts.models.clone(), opts.detector, opts.spec, opts.alignment));
        let mut pool = DetectorPool { first: Mutex::new(None), recipe };
        if pool.recipe.is_some() {
            pool.first = Mutex::new(Some(pool.make()?));
        }
        Ok(pool)
    }

    fn make(&self) -> Result<Detector> {
        let (models, kind, spec, alignment) = self.recipe.as_ref().expect("only detection pools make detectors");
        FaceAligner::open(models.as_deref(), *kind, *spec, *alignment)
    }

    /// A worker thread's detector (`None` when the pack uses landmarks only).
    fn take(&self) -> Option<Detector> {
        let first = self.first.lock().unwrap_or_else(|p| p.into_inner()).take();
        if first.is_some() || self.recipe.is_none() {
            return first;
        }
        // The models loaded once already, so a failure here is not the user's data.
        Some(self.make().expect("face models loaded before cannot load now"))
    }
}
