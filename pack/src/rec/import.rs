//! `facekit import rec`: an MXNet RecordIO file (insightface's or im2rec's) into a facekit dataset,
//! the images kept byte for byte after a full decode check, bad records listed and never fatal.
//!
//! It is a [`crate::pipeline::Source`]: a plan made before anything is written
//! ([`super::input`]), each record checked on a worker thread ([`super::record`]) holding a
//! bounded number of bytes ([`super::inflight`]), and the pipeline's writer, checkpoints
//! ([`super::progress`]) and rejects log; so the output is the same for any `--threads`, and a
//! resumed import equals an uninterrupted one.
//!
//! `--valid-fraction F` holds records out into `NAME.valid` by `facekit pack`'s own rule
//! ([`crate::split`]): a record goes there when the SHA-256 of its record path
//! (`train.rec#KEY`), read as a fraction of 2^64, is below F. `--names FILE` gives the label map
//! identity names ([`super::names`]) instead of the class numbers.

use super::input::{layout_name, Entry, Plan, RecFiles, MAX_RECORD_BYTES};
use super::names::IdentityNames;
use super::progress::{self, Progress, IMPORT_PROGRESS_FORMAT};
use super::record::{import_one, Expect, LabelLimit, Outcome};
use crate::align::{ChipSpec, Template};
use crate::checkpoint::file_sha256;
use crate::pipeline::{self, Destination, End, Observer, RunOptions, RunStats, Source, Verdict};
use crate::replace::base_name;
use crate::report::Reject;
use crate::run::{write_manifest_unless_done, VALID_SUFFIX};
use crate::split::{path_hash, SplitRule};
use crate::RejectReason;
use anyhow::{bail, Context, Result};
use facekit_io::StopFlag;
use facekit_recordio::RecReader;
use facekit_shard::manifest::{AlignmentInfo, EncodingInfo, LabelEntry, LabelMap, OriginInfo, PartInfo, SourceInfo};
use facekit_shard::{DatasetPaths, Encoding, Manifest};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Everything `facekit import rec` needs.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// An insightface folder (`train.rec`, `train.idx`, `property`) or a `.rec` file.
    pub input: PathBuf,
    /// Output dataset (`training/emore`).
    pub output: PathBuf,
    /// Target shard size in bytes.
    pub shard_size: u64,
    /// Worker threads.
    pub threads: usize,
    /// `--valid-fraction`: the fraction of records held out into `NAME.valid`, by pack's rule.
    pub valid_fraction: f64,
    /// `--names`: a file naming the classes (one name per line, or a facekit label map).
    pub names: Option<PathBuf>,
    /// Continue an interrupted import from its last complete shard.
    pub resume: bool,
    /// Replace a finished dataset of the same name, once the new one is complete.
    pub overwrite: bool,
    /// `--part K/N`: import only this part of the records (whole identities), for `facekit merge`.
    pub part: Option<crate::part::Part>,
    /// Show a progress bar.
    pub progress: bool,
    /// Set (Ctrl-C, SIGTERM) to stop before the next record; the last checkpoint stays resumable.
    pub stop: StopFlag,
    /// Where notices go ([`crate::pipeline::Event`]); it may also stop the import at a
    /// checkpoint or a finishing step.
    pub events: Observer,
}

/// Running totals of an import (kept in the progress file, so a resumed import reports the
/// whole job).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportCounters {
    /// Image records imported (into both datasets).
    pub imported: u64,
    /// Of those, the records held out into `NAME.valid` (absent without a split).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imported_valid: Option<u64>,
    /// Image records rejected.
    pub rejected: u64,
    /// Regions of a scanned `.rec` (no `.idx`) that were no record at all, also listed.
    pub unreadable: u64,
    /// `.idx` lines left out, also listed: a key listed again (MXNet reads its last line), a
    /// record another key already names, a key outside insightface's layout.
    #[serde(default)]
    pub skipped: u64,
    /// Header and identity records of insightface's layout (metadata, not images).
    pub layout_records: u64,
    /// Rejections by reason code (unreadable regions included).
    pub rejected_by_reason: BTreeMap<String, u64>,
    /// Largest class id imported.
    pub max_class: Option<u32>,
    /// Imported records by encoding (`jpeg`, `png`).
    pub by_encoding: BTreeMap<String, u64>,
}

/// What an import did (`NAME.report.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImportReport {
    /// The dataset written.
    pub dataset: String,
    /// The validation dataset written beside it, with `--valid-fraction`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_dataset: Option<String>,
    /// The `.rec` read.
    pub rec: String,
    /// `insightface` or `im2rec`.
    pub layout: String,
    /// The counts.
    pub counters: ImportCounters,
    /// Classes in the manifest.
    pub classes: u32,
    /// Bytes of the shards written (of both datasets, with a split, as `counters.imported` counts both).
    pub dataset_bytes: u64,
    /// Records checked in this run (not counting those before a resume).
    pub processed_this_run: u64,
    /// Seconds this run took.
    pub elapsed_s: f64,
    /// Records per second in this run.
    pub records_per_s: f64,
    /// Worker threads.
    pub threads: usize,
}

impl ImportReport {
    /// The summary printed at the end.
    pub fn summary(&self) -> String {
        let c = &self.counters;
        let mut s = format!(
            "Imported {} of {} image records from {} ({} layout) into {} ({} classes) in {:.1} s ({:.0} records/s)",
            c.imported,
            c.imported + c.rejected,
            self.rec,
            self.layout,
            self.dataset,
            self.classes,
            self.elapsed_s,
            self.records_per_s
        );
        if let (Some(valid), Some(name)) = (c.imported_valid, &self.valid_dataset) {
            s.push_str(&format!("\n  {} train, {valid} held out into {name}", c.imported - valid));
        }
        if c.rejected + c.unreadable + c.skipped > 0 {
            let reasons: Vec<String> = c.rejected_by_reason.iter().map(|(k, v)| format!("{k} {v}")).collect();
            s.push_str(&format!(
                "\n  rejected: {} records, {} unreadable regions, {} index lines left out ({}); listed in {}.rejects.tsv",
                c.rejected,
                c.unreadable,
                c.skipped,
                reasons.join(", "),
                self.dataset
            ));
        }
        s
    }
}

/// How an import ended: `Done` with the report, or `Interrupted` after some complete shards.
pub type ImportEnd = End<ImportReport>;

/// Imports a `.rec` into a dataset. A finished dataset of the same name is replaced only with
/// `overwrite`, and only once the new one is complete (see [`crate::replace`]).
pub fn import_rec(opts: &ImportOptions) -> Result<ImportEnd> {
    super::inflight::check_threads(opts.threads)?;
    if opts.output.file_name().is_none() {
        bail!("output {} has no dataset name", opts.output.display());
    }
    if !(0.0..1.0).contains(&opts.valid_fraction) {
        bail!("--valid-fraction {} is outside [0, 1)", opts.valid_fraction);
    }
    // The validation dataset is locked and replaced with the main one even without a split, as
    // pack's is: an import over a dataset that had one removes the stale `NAME.valid`.
    let run = RunOptions {
        output: &opts.output,
        siblings: &[VALID_SUFFIX],
        tool: "import",
        unit: "records",
        shard_size: opts.shard_size,
        threads: opts.threads,
        resume: opts.resume,
        overwrite: opts.overwrite,
        progress: opts.progress,
        stop: &opts.stop,
        events: &opts.events,
    };
    pipeline::run(&run, || RecSource::new(opts))
}

/// The records of a `.rec`, as a [`Source`] of the pipeline.
pub(crate) struct RecSource {
    files: RecFiles,
    reader: RecReader,
    plan: Plan,
    rec_name: String,
    expect: Expect,
    input: progress::Source,
    threads: usize,
    rule: SplitRule,
    names: Option<IdentityNames>,
    /// The entries this import reads: all of them, or its `--part`'s.
    range: (u64, u64),
    /// The part, as the manifest records it, with the whole file's class count when no
    /// `property` or names file fixes it (every part must have the same label map).
    part: Option<(PartInfo, u32)>,
}

impl RecSource {
    /// Locates and plans the files; everything is read and checked before anything is removed
    /// or written.
    fn new(opts: &ImportOptions) -> Result<Self> {
        let files = RecFiles::locate(&opts.input)?;
        let reader = RecReader::open(&files.rec)?;
        let property = files.read_property()?;
        let names = opts.names.as_deref().map(IdentityNames::read).transpose()?;
        let plan = Plan::make(&files, &reader)?;
        let rec_name = files.rec.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let expect = expectations(&reader, &plan, property.as_ref(), names.as_ref(), &files)?;
        let mut input = source_of(&files, &plan, opts)?;
        let (range, part) = match opts.part {
            None => ((0, plan.entries.len() as u64), None),
            Some(p) => {
                let (range, info, classes) = cut(&reader, &plan, &expect, &input, p);
                input.entries = range.1 - range.0;
                input.part = Some(format!("{p} (entries {}..{})", range.0, range.1));
                (range, Some((info, classes)))
            }
        };
        // Pack's fraction rule alone: its per-class rule needs every label before the first
        // record is written, which a `.rec` gives only by reading it twice.
        let mut rule = SplitRule::new(opts.valid_fraction, 0, 0);
        rule.seal();
        Ok(RecSource { files, reader, plan, rec_name, expect, input, threads: opts.threads, rule, names, range, part })
    }

    /// `file.rec@offset`, as the rejects list names a place in the `.rec`.
    fn at(&self, offset: u64) -> String {
        format!("{}@{offset}", self.files.rec.display())
    }
}

/// What the import's counters learn from one entry.
pub(crate) enum RecTally {
    /// An image record rejected.
    Rejected(RejectReason),
    /// An `.idx` line or a region the plan left out (`damage`: a region that was no record).
    Skipped {
        /// A damaged region of a scanned file.
        damage: bool,
        /// Its reject code.
        reason: RejectReason,
    },
    /// An image record imported.
    Imported {
        /// Its class.
        class: u32,
        /// Its encoding.
        encoding: Encoding,
        /// Held out into the validation dataset.
        valid: bool,
    },
}

impl Source for RecSource {
    type Item = Entry;
    type Worker = ();
    type Outcome = Outcome;
    type Tally = RecTally;
    type Input = progress::Source;
    type Counters = ImportCounters;
    type Final = bool;
    type Report = ImportReport;

    const FORMAT: &'static str = IMPORT_PROGRESS_FORMAT;

    fn input(&self) -> &progress::Source {
        &self.input
    }

    fn total(&self) -> u64 {
        self.input.entries
    }

    fn wants_valid(&self) -> bool {
        !self.rule.is_none()
    }

    fn counters(&self) -> ImportCounters {
        ImportCounters {
            layout_records: self.plan.layout_records,
            imported_valid: self.wants_valid().then_some(0),
            ..Default::default()
        }
    }

    /// The entries and regions the plan left out, all listed before the first image (by the
    /// first part only, so that the parts' lists joined are the one import's).
    fn preamble(&self) -> Vec<(Reject, RecTally)> {
        if self.part.as_ref().is_some_and(|(p, _)| p.index > 1) {
            return Vec::new();
        }
        self.plan
            .skipped
            .iter()
            .map(|skip| {
                let reject = Reject { path: self.at(skip.offset), reason: skip.reason, detail: skip.detail.clone() };
                (reject, RecTally::Skipped { damage: skip.is_damage(), reason: skip.reason })
            })
            .collect()
    }

    fn items(&self, from: u64) -> Box<dyn Iterator<Item = Entry> + Send + '_> {
        let (start, end) = (self.range.0 as usize, self.range.1 as usize);
        Box::new(self.plan.entries[start + from as usize..end].iter().copied())
    }

    /// The bytes the record will hold; one that cannot be framed costs its reject's few bytes
    /// (reading it fails the same way).
    fn cost(&self, entry: &Entry) -> u64 {
        self.reader.measure(entry.offset, MAX_RECORD_BYTES).unwrap_or(0) + super::inflight::ENTRY_OVERHEAD
    }

    fn budget(&self) -> u64 {
        super::inflight::budget(self.threads)
    }

    fn worker(&self) {}

    fn process(&self, _: &mut (), entry: &Entry) -> Outcome {
        import_one(&self.reader, *entry, &self.expect, &self.rec_name)
    }

    fn name(&self, entry: &Entry) -> String {
        format!("the record at byte {}", entry.offset)
    }

    fn judge(&self, entry: &Entry, outcome: Outcome) -> Verdict<RecTally> {
        match outcome {
            Outcome::Rejected(reason, detail) => {
                Verdict::Reject(Reject { path: self.at(entry.offset), reason, detail }, RecTally::Rejected(reason))
            }
            Outcome::Imported(record) => {
                let class = record.labels.class_id.expect("imported records have a class");
                let valid = self.wants_valid() && self.rule.is_valid(None, path_hash(&record.path));
                let tally = RecTally::Imported { class, encoding: record.encoding, valid };
                Verdict::Keep { record, valid, tally }
            }
        }
    }

    fn count(&self, c: &mut ImportCounters, tally: RecTally) {
        match tally {
            RecTally::Rejected(reason) => {
                c.rejected += 1;
                *c.rejected_by_reason.entry(reason.code().into()).or_default() += 1;
            }
            RecTally::Skipped { damage, reason } => {
                if damage {
                    c.unreadable += 1;
                } else {
                    c.skipped += 1;
                }
                *c.rejected_by_reason.entry(reason.code().into()).or_default() += 1;
            }
            RecTally::Imported { class, encoding, valid } => {
                c.max_class = Some(c.max_class.map_or(class, |m| m.max(class)));
                *c.by_encoding.entry(encoding_name(encoding).into()).or_default() += 1;
                c.imported += 1;
                if valid {
                    *c.imported_valid.get_or_insert(0) += 1;
                }
            }
        }
    }

    fn check(&self, p: &Progress, file: &Path, _: &DatasetPaths) -> Result<()> {
        progress::check(p, file, &self.input)
    }

    fn finished(&self, _: &Destination, _: &Progress, _: &RunStats) -> bool {
        true
    }

    /// The manifests and label maps, validation first, training last (as pack writes them).
    fn manifests(&self, dest: &Destination, p: &Progress) -> Result<()> {
        let (c, expect) = (&p.counters, &self.expect);
        if c.imported == 0 {
            return Ok(());
        }
        let classes = self.classes(p);
        let rec = p.input.rec.clone();
        let encoding = EncodingInfo {
            format: expect.encoding,
            quality: None,
            chroma: None,
            width: expect.width,
            height: expect.height,
        };
        let files = &self.files;
        let manifest = |records: u64| {
            let sources = vec![SourceInfo { id: 0, name: rec.clone(), class_offset: 0, classes, records }];
            let mut manifest = Manifest::new(classes, sources, Some(prealigned(expect)), encoding.clone());
            manifest.part = self.part.as_ref().map(|(p, _)| p.clone());
            manifest.origin = Some(OriginInfo {
                format: "mxnet-recordio".into(),
                path: rec.clone(),
                layout: layout_name(&self.plan.layout).into(),
                idx: files.idx.as_ref().map(|p| p.display().to_string()),
                property: files.property.as_ref().map(|p| p.display().to_string()),
            });
            manifest
        };
        // Class ids are the file's own labels, so every label keeps its number (unused numbers
        // of a sparse range are listed too, with no records); its name is the names file's, or
        // the number.
        let name = files.rec.display().to_string();
        let identity = |k: u32| match &self.names {
            Some(n) => n.names[k as usize].clone(),
            None => k.to_string(),
        };
        let labels = LabelMap {
            entries: (0..classes)
                .map(|k| LabelEntry { class_id: k, source: name.clone(), identity: identity(k) })
                .collect(),
        };
        let held_out = c.imported_valid.unwrap_or(0);
        let shard_size = p.input.shard_size;
        if self.wants_valid() {
            write_manifest_unless_done(dest.work(1), &p.valid_shards, manifest(held_out), &labels, shard_size)?;
        }
        write_manifest_unless_done(dest.work(0), &p.shards, manifest(c.imported - held_out), &labels, shard_size)
    }

    fn report(&self, dest: &Destination, p: &Progress, run: &RunStats) -> Result<ImportReport> {
        let c = &p.counters;
        let elapsed_s = run.started.elapsed().as_secs_f64();
        let made = c.imported > 0;
        Ok(ImportReport {
            dataset: dest.shown_name(made),
            valid_dataset: self.wants_valid().then(|| base_name(if made { dest.final_paths(1) } else { dest.work(1) })),
            rec: p.input.rec.clone(),
            layout: layout_name(&self.plan.layout).into(),
            counters: c.clone(),
            classes: self.classes(p),
            dataset_bytes: p.shards.iter().chain(&p.valid_shards).map(|s| s.bytes).sum(),
            processed_this_run: run.processed,
            elapsed_s,
            records_per_s: if elapsed_s > 0.0 { run.processed as f64 / elapsed_s } else { 0.0 },
            threads: run.threads,
        })
    }
}

impl RecSource {
    /// Classes of the manifest: `property`'s count, else the names file's, else one more than
    /// the largest label.
    fn classes(&self, p: &Progress) -> u32 {
        let whole = self.part.as_ref().map(|(_, classes)| *classes);
        self.expect.classes.fixed().or(whole).unwrap_or_else(|| p.counters.max_class.map_or(0, |m| m + 1))
    }
}

/// Part `part` of the image records, cut as `facekit pack --part` cuts its input
/// ([`crate::part::Boundaries`]: runs of consecutive records of one label, a record whose
/// label cannot be read its own run), which takes every record's label, so the whole `.rec` is
/// read once before importing. Returns the part's entry range, its manifest entry (the input
/// fingerprint hashes the `.rec`'s fingerprint and every record's place and label), and the class
/// count of the whole file when nothing fixes it (one more than the largest label).
fn cut(
    reader: &RecReader,
    plan: &Plan,
    expect: &Expect,
    input: &progress::Source,
    part: crate::part::Part,
) -> ((u64, u64), PartInfo, u32) {
    use sha2::Digest;
    let labels: Vec<Option<u32>> = plan
        .entries
        .iter()
        .map(|e| {
            let frame = reader.read_at(e.offset, MAX_RECORD_BYTES).ok()?;
            let u = facekit_recordio::unpack(&frame.payload).ok()?;
            let label = u.label_values().first().copied().unwrap_or(f32::NAN);
            super::record::check_label(label, expect.classes).ok()
        })
        .collect();
    let mut bounds = crate::part::Boundaries::default();
    let mut h = sha2::Sha256::new();
    let rec_name = Path::new(&input.rec).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    for field in [Some(rec_name), Some(input.rec_bytes.to_string()), input.idx_sha256.clone()]
        .into_iter()
        .chain([input.property_sha256.clone(), input.names_sha256.clone()])
    {
        h.update(field.unwrap_or_default().as_bytes());
        h.update([0]);
    }
    for (e, label) in plan.entries.iter().zip(&labels) {
        bounds.observe(*label);
        h.update(e.offset.to_le_bytes());
        h.update(label.map_or(u64::MAX, u64::from).to_le_bytes());
    }
    let range = bounds.range(part);
    let info = PartInfo {
        index: part.index,
        count: part.count,
        input_sha256: h.finalize().iter().map(|b| format!("{b:02x}")).collect(),
        input_files: plan.entries.len() as u64,
        first_file: range.0,
        end_file: range.1,
    };
    let classes = labels.iter().flatten().max().map_or(0, |m| m + 1);
    (range, info, classes)
}

/// The image size, encoding and class limit every record is checked against: the first readable
/// image's size and encoding, `property`'s size and class count where there is one (which the
/// first image must then agree with), else the names file's count, else at most one class per
/// image record. A names file must name exactly `property`'s classes.
///
/// The first readable image is looked for among all the records, however many damaged ones come
/// first: damage at the start of a file must not cost the good records after it.
fn expectations(
    reader: &RecReader,
    plan: &Plan,
    property: Option<&facekit_recordio::Property>,
    names: Option<&IdentityNames>,
    files: &RecFiles,
) -> Result<Expect> {
    let first = plan.entries.iter().find_map(|e| {
        let frame = reader.read_at(e.offset, MAX_RECORD_BYTES).ok()?;
        let u = facekit_recordio::unpack(&frame.payload).ok()?;
        let encoding = match crate::photo::sniff_format(u.image)? {
            image::ImageFormat::Jpeg => Encoding::Jpeg,
            image::ImageFormat::Png => Encoding::Png,
            _ => return None,
        };
        let img = crate::photo::decode_image(u.image).ok()?;
        Some((img.width(), img.height(), encoding))
    });
    let Some((width, height, encoding)) = first else {
        bail!(
            "none of the {} image records of {} is a readable JPEG or PNG image: nothing to import",
            plan.entries.len(),
            files.rec.display()
        )
    };
    let records = u32::try_from(plan.entries.len()).unwrap_or(u32::MAX).min(super::record::MAX_LABEL);
    let Some(p) = property else {
        let Some(names) = names else {
            return Ok(Expect { width, height, classes: LabelLimit::Records(records), encoding });
        };
        if u64::from(names.len()) > plan.entries.len() as u64 || names.len() > super::record::MAX_LABEL {
            // The same bound as a property file's: each class needs a record to fill it.
            bail!(
                "names file {} names {} classes, but {} has only {} image records: at most {} classes can have a record",
                names.file.display(),
                names.len(),
                files.rec.display(),
                plan.entries.len(),
                records
            );
        }
        return Ok(Expect { width, height, classes: LabelLimit::Names(names.len()), encoding });
    };
    let name = files.property.as_ref().map_or(String::new(), |p| p.display().to_string());
    if p.classes == 0
        || p.classes > u64::from(super::record::MAX_LABEL)
        || p.width == 0
        || p.height == 0
        || p.width > u32::from(u16::MAX)
        || p.height > u32::from(u16::MAX)
    {
        bail!("property file {name} describes no usable dataset ({} classes, {}x{})", p.classes, p.width, p.height);
    }
    if p.classes > plan.entries.len() as u64 {
        // Each class is a line of the label map and a row of the ArcFace head: a count the
        // records cannot fill is a property file of another dataset, or damage.
        bail!(
            "property file {name} promises {} classes, but {} has only {} image records: at most {} classes can have a record \
             (a property file of another dataset?); fix or remove it",
            p.classes,
            files.rec.display(),
            plan.entries.len(),
            plan.entries.len()
        );
    }
    if let Some(names) = names {
        names.check_count(p.classes as u32, &format!("property file {name}"))?;
    }
    Ok(Expect { width: p.width, height: p.height, classes: LabelLimit::Property(p.classes as u32), encoding })
}

fn source_of(files: &RecFiles, plan: &Plan, opts: &ImportOptions) -> Result<progress::Source> {
    let meta = std::fs::metadata(&files.rec).with_context(|| format!("cannot read {}", files.rec.display()))?;
    let mtime =
        meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
    Ok(progress::Source {
        rec: files.rec.canonicalize().unwrap_or_else(|_| files.rec.clone()).display().to_string(),
        rec_bytes: meta.len(),
        rec_mtime_ns: mtime,
        idx_sha256: files.idx.as_deref().map(facekit_io::bounded::file_sha256).transpose()?,
        property_sha256: files.property.as_deref().map(file_sha256).transpose()?,
        entries: plan.entries.len() as u64,
        shard_size: opts.shard_size,
        valid_fraction: opts.valid_fraction,
        names_sha256: opts.names.as_deref().map(file_sha256).transpose()?,
        part: None,
    })
}

fn encoding_name(e: Encoding) -> &'static str {
    match e {
        Encoding::Jpeg => "jpeg",
        Encoding::Png => "png",
        Encoding::Raw => "raw",
        Encoding::RawZstd => "raw-zstd",
    }
}

/// The manifest's alignment of insightface data: done before facekit saw it, to the ArcFace
/// template at the image size (what insightface's releases are).
fn prealigned(expect: &Expect) -> AlignmentInfo {
    let spec = ChipSpec { size: expect.width, padding: 0.0 };
    AlignmentInfo {
        method: "pre-aligned (imported from MXNet RecordIO)".into(),
        detector: "none".into(),
        size: expect.width,
        padding: 0.0,
        template: Template::ArcFace5.name().into(),
        template_points: Template::ArcFace5.points(&spec).to_vec(),
        interpolation: "unknown".into(),
    }
}
