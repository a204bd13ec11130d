//! `facekit import rec`: an MXNet RecordIO file (insightface's or im2rec's) into a facekit dataset,
//! the images kept byte for byte after a full decode check, bad records listed and never fatal.
//!
//! It is a [`crate::pipeline::Source`]: a plan made before anything is written
//! ([`super::input`]), each record checked on a worker thread ([`super::record`]) holding a
//! bounded number of bytes ([`super::inflight`]), and the pipeline's writer, checkpoints
//! ([`super::progress`]) and rejects log; so the output is the same for any `--threads`, and a
//! resumed import equals an uninterrupted one.

use super::input::{layout_name, Entry, Plan, RecFiles, MAX_RECORD_BYTES};
use super::progress::{self, Progress, IMPORT_PROGRESS_FORMAT};
use super::record::{import_one, Expect, LabelLimit, Outcome};
use crate::align::{ChipSpec, Template};
use crate::checkpoint::file_sha256;
use crate::pipeline::{self, Destination, End, Observer, RunOptions, RunStats, Source, Verdict};
use crate::report::Reject;
use crate::RejectReason;
use anyhow::{bail, Context, Result};
use facekit_io::StopFlag;
use facekit_recordio::RecReader;
use facekit_shard::manifest::{AlignmentInfo, EncodingInfo, LabelEntry, LabelMap, OriginInfo, SourceInfo};
use facekit_shard::{DatasetPaths, DatasetWriter, Encoding, Manifest};
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
    /// Continue an interrupted import from its last complete shard.
    pub resume: bool,
    /// Replace a finished dataset of the same name, once the new one is complete.
    pub overwrite: bool,
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
    /// Image records imported.
    pub imported: u64,
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
    /// The `.rec` read.
    pub rec: String,
    /// `insightface` or `im2rec`.
    pub layout: String,
    /// The counts.
    pub counters: ImportCounters,
    /// Classes in the manifest.
    pub classes: u32,
    /// Bytes of the dataset's shards.
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
    let run = RunOptions {
        output: &opts.output,
        siblings: &[],
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
}

impl RecSource {
    /// Locates and plans the files; everything is read and checked before anything is removed
    /// or written.
    fn new(opts: &ImportOptions) -> Result<Self> {
        let files = RecFiles::locate(&opts.input)?;
        let reader = RecReader::open(&files.rec)?;
        let property = files.read_property()?;
        let plan = Plan::make(&files, &reader)?;
        let rec_name = files.rec.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let expect = expectations(&reader, &plan, property.as_ref(), &files)?;
        let input = source_of(&files, &plan, opts.shard_size)?;
        Ok(RecSource { files, reader, plan, rec_name, expect, input, threads: opts.threads })
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

    fn counters(&self) -> ImportCounters {
        ImportCounters { layout_records: self.plan.layout_records, ..Default::default() }
    }

    /// The entries and regions the plan left out, all listed before the first image.
    fn preamble(&self) -> Vec<(Reject, RecTally)> {
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
        Box::new(self.plan.entries[from as usize..].iter().copied())
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
                let tally = RecTally::Imported { class, encoding: record.encoding };
                Verdict::Keep { record, valid: false, tally }
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
            RecTally::Imported { class, encoding } => {
                c.max_class = Some(c.max_class.map_or(class, |m| m.max(class)));
                *c.by_encoding.entry(encoding_name(encoding).into()).or_default() += 1;
                c.imported += 1;
            }
        }
    }

    fn check(&self, p: &Progress, file: &Path, _: &DatasetPaths) -> Result<()> {
        progress::check(p, file, &self.input)
    }

    fn finished(&self, _: &Destination, _: &Progress, _: &RunStats) -> bool {
        true
    }

    /// The manifest and label map.
    fn manifests(&self, dest: &Destination, p: &Progress) -> Result<()> {
        let (paths, c, expect) = (dest.work(0), &p.counters, &self.expect);
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
        let sources = vec![SourceInfo { id: 0, name: rec.clone(), class_offset: 0, classes, records: c.imported }];
        let mut manifest = Manifest::new(classes, sources, Some(prealigned(expect)), encoding);
        let files = &self.files;
        manifest.origin = Some(OriginInfo {
            format: "mxnet-recordio".into(),
            path: rec,
            layout: layout_name(&self.plan.layout).into(),
            idx: files.idx.as_ref().map(|p| p.display().to_string()),
            property: files.property.as_ref().map(|p| p.display().to_string()),
        });
        // Class ids are the file's own labels, so every label keeps its number (unused numbers
        // of a sparse range are listed too, with no records).
        let name = files.rec.display().to_string();
        let labels = LabelMap {
            entries: (0..classes)
                .map(|k| LabelEntry { class_id: k, source: name.clone(), identity: k.to_string() })
                .collect(),
        };
        let done = Manifest::read(&paths.manifest()).is_ok_and(|m| m.shards == p.shards) && paths.labels().is_file();
        if !done {
            DatasetWriter::completed(paths.clone(), p.input.shard_size, p.shards.clone()).finish(manifest, &labels)?;
        }
        Ok(())
    }

    fn report(&self, dest: &Destination, p: &Progress, run: &RunStats) -> Result<ImportReport> {
        let c = &p.counters;
        let elapsed_s = run.started.elapsed().as_secs_f64();
        Ok(ImportReport {
            dataset: dest.shown_name(c.imported > 0),
            rec: p.input.rec.clone(),
            layout: layout_name(&self.plan.layout).into(),
            counters: c.clone(),
            classes: self.classes(p),
            dataset_bytes: p.shards.iter().map(|s| s.bytes).sum(),
            processed_this_run: run.processed,
            elapsed_s,
            records_per_s: if elapsed_s > 0.0 { run.processed as f64 / elapsed_s } else { 0.0 },
            threads: run.threads,
        })
    }
}

impl RecSource {
    /// Classes of the manifest: `property`'s count, else one more than the largest label.
    fn classes(&self, p: &Progress) -> u32 {
        self.expect.classes.property().unwrap_or_else(|| p.counters.max_class.map_or(0, |m| m + 1))
    }
}

/// The image size, encoding and class limit every record is checked against: the first readable
/// image's size and encoding, `property`'s size and class count where there is one (which the
/// first image must then agree with), else at most one class per image record.
///
/// The first readable image is looked for among all the records, however many damaged ones come
/// first: damage at the start of a file must not cost the good records after it.
fn expectations(
    reader: &RecReader,
    plan: &Plan,
    property: Option<&facekit_recordio::Property>,
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
        return Ok(Expect { width, height, classes: LabelLimit::Records(records), encoding });
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
    Ok(Expect { width: p.width, height: p.height, classes: LabelLimit::Property(p.classes as u32), encoding })
}

fn source_of(files: &RecFiles, plan: &Plan, shard_size: u64) -> Result<progress::Source> {
    let meta = std::fs::metadata(&files.rec).with_context(|| format!("cannot read {}", files.rec.display()))?;
    let mtime =
        meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
    Ok(progress::Source {
        rec: files.rec.canonicalize().unwrap_or_else(|_| files.rec.clone()).display().to_string(),
        rec_bytes: meta.len(),
        rec_mtime_ns: mtime,
        idx_sha256: files.idx.as_deref().map(sha256_of).transpose()?,
        property_sha256: files.property.as_deref().map(file_sha256).transpose()?,
        entries: plan.entries.len() as u64,
        shard_size,
    })
}

/// SHA-256 of a file of any size, streamed (an `.idx` of Glint360K is hundreds of megabytes).
fn sha256_of(path: &Path) -> Result<String> {
    use sha2::Digest;
    use std::io::Read;
    let mut f = facekit_io::bounded::open_regular(path)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let k = f.read(&mut buf).with_context(|| format!("cannot read {}", path.display()))?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
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
