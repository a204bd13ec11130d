//! `facekit import rec`: an MXNet RecordIO file (insightface's or im2rec's) into a facekit dataset,
//! the images kept byte for byte after a full decode check, bad records listed and never fatal.
//!
//! The shape is the pack's: a plan made before anything is written ([`super::input`]), chunks
//! of records checked in parallel ([`super::record`]), a writer thread putting them into shards
//! in file order, a checkpoint after every shard ([`super::progress`]), rejects appended as they
//! happen; so the output is the same for any `--threads`, and a resumed import equals an
//! uninterrupted one.

use super::input::{layout_name, Entry, Plan, RecFiles, Skipped, MAX_RECORD_BYTES};
use super::progress::{Progress, Source, IMPORT_PROGRESS_FORMAT};
use super::record::{import_one, Expect, LabelLimit, Outcome};
use crate::align::{ChipSpec, Template};
use crate::checkpoint::{check_shards, file_sha256};
use crate::rejects::RejectsLog;
use crate::replace::{remove_file, Destination};
use crate::report::Reject;
use anyhow::{bail, Context, Result};
use facekit_io::StopFlag;
use facekit_recordio::RecReader;
use facekit_shard::manifest::{AlignmentInfo, EncodingInfo, LabelEntry, LabelMap, OriginInfo, SourceInfo};
use facekit_shard::{DatasetPaths, DatasetWriter, Encoding, Manifest};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Test-only: stops an import after this many checkpoints, as a crash would (tests of `--resume`).
const STOP_AFTER_ENV: &str = "FACEKIT_IMPORT_STOP_AFTER_SHARDS";

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
    /// Set (Ctrl-C, SIGTERM) to stop at the next chunk; the last checkpoint stays resumable.
    pub stop: StopFlag,
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

/// How an import ended.
#[derive(Debug)]
pub enum ImportEnd {
    /// Every record was read; the dataset and its report are written.
    Done(Box<ImportReport>),
    /// Stopped early; `shards` complete shards are resumable with `--resume`.
    Interrupted {
        /// Complete shards recorded in the progress file.
        shards: usize,
    },
}

/// Imports a `.rec` into a dataset. A finished dataset of the same name is replaced only with
/// `overwrite`, and only once the new one is complete (see [`crate::replace`]).
pub fn import_rec(opts: &ImportOptions) -> Result<ImportEnd> {
    let started = Instant::now();
    super::inflight::check_threads(opts.threads)?;
    if opts.output.file_name().is_none() {
        bail!("output {} has no dataset name", opts.output.display());
    }
    let main = DatasetPaths::new(&opts.output);
    let _lock = facekit_io::lock::exclusive(&main.lock(), &format!("dataset {}", opts.output.display()))?;
    let dest = Destination::choose(&main, &[], opts.resume, opts.overwrite, "import")?;
    if dest.committing() {
        dest.finish()?;
        let text = facekit_io::bounded::read(&main.report(), facekit_io::bounded::STATE)?;
        let report = serde_json::from_slice(&text)
            .with_context(|| format!("import report {} is damaged", main.report().display()))?;
        return Ok(ImportEnd::Done(Box::new(report)));
    }
    let paths = dest.work(0).clone();
    // Everything is read and checked before anything is removed or written.
    let files = RecFiles::locate(&opts.input)?;
    let reader = RecReader::open(&files.rec)?;
    let property = files.read_property()?;
    let plan = Plan::make(&files, &reader)?;
    let rec_name = files.rec.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let expect = expectations(&reader, &plan, property.as_ref(), &files)?;
    let source = source_of(&files, &plan, opts.shard_size)?;

    let n = paths.remove_stale_temps()?;
    if n > 0 {
        eprintln!("facekit import: removed {n} temporary file(s) left by an interrupted run");
    }
    let resumed = resume_point(opts, &paths, &source)?;
    let (mut sink, consumed) = match resumed {
        Some(p) if p.finished => {
            return complete(&dest, &files, &plan, &expect, &p, started, 0, opts.threads)
                .map(|r| ImportEnd::Done(Box::new(r)))
        }
        Some(p) => {
            eprintln!(
                "facekit import: resuming after {} of {} records ({} shard(s) done)",
                p.consumed,
                source.entries,
                p.shards.len()
            );
            let sink = Sink {
                writer: DatasetWriter::resume(paths.clone(), opts.shard_size, p.shards)?,
                rejects: RejectsLog::resume(&paths.rejects(), p.rejects_bytes)?,
                counters: p.counters,
                consumed: p.consumed,
                checkpoints: 0,
            };
            (sink, p.consumed)
        }
        None => {
            for p in [paths.progress(), paths.report(), paths.rejects()] {
                remove_file(&p)?;
            }
            paths.remove_existing()?;
            let mut sink = Sink {
                writer: DatasetWriter::create(paths.clone(), opts.shard_size)?,
                rejects: RejectsLog::create(&paths.rejects())?,
                counters: ImportCounters { layout_records: plan.layout_records, ..Default::default() },
                consumed: 0,
                checkpoints: 0,
            };
            for skip in &plan.skipped {
                sink.list_skipped(&files.rec, skip)?;
            }
            (sink, 0)
        }
    };

    let bar = facekit_io::progress::items(source.entries, "records");
    if !opts.progress {
        facekit_io::progress::hide(&bar);
    }
    bar.set_position(consumed);
    bar.reset_eta();
    let ctx = Ctx {
        source: &source,
        progress: paths.progress(),
        rec: files.rec.display().to_string(),
        stop_after: std::env::var(STOP_AFTER_ENV).ok().and_then(|v| v.parse().ok()),
    };
    // Bounded by the bytes the records hold, not by their number (see `inflight`).
    let budget = super::inflight::budget(opts.threads);
    let all_written = super::inflight::run(
        &reader,
        &plan.entries[consumed as usize..],
        opts.threads,
        budget,
        &opts.stop,
        |entry| import_one(&reader, entry, &expect, &rec_name),
        |entry, outcome| {
            bar.inc(1);
            sink.accept(&ctx, entry, outcome)
        },
    )?;
    bar.finish_and_clear();
    if !all_written || opts.stop.is_set() {
        let shards = Progress::read_for(&paths.progress(), &source).map(|p| p.shards.len()).unwrap_or(0);
        return Ok(ImportEnd::Interrupted { shards });
    }
    sink.writer.flush_shard()?;
    let last = Progress {
        format: IMPORT_PROGRESS_FORMAT.into(),
        source: source.clone(),
        consumed: sink.consumed,
        shards: sink.writer.shards().to_vec(),
        counters: sink.counters.clone(),
        rejects_bytes: sink.rejects.sync()?,
        finished: true,
    };
    last.write(&paths.progress())?;
    drop(sink);
    let processed = source.entries - consumed;
    let report = complete(&dest, &files, &plan, &expect, &last, started, processed, opts.threads)?;
    Ok(ImportEnd::Done(Box::new(report)))
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

fn source_of(files: &RecFiles, plan: &Plan, shard_size: u64) -> Result<Source> {
    let meta = std::fs::metadata(&files.rec).with_context(|| format!("cannot read {}", files.rec.display()))?;
    let mtime =
        meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
    Ok(Source {
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

fn resume_point(opts: &ImportOptions, paths: &DatasetPaths, now: &Source) -> Result<Option<Progress>> {
    if !opts.resume {
        return Ok(None);
    }
    let progress = paths.progress();
    if !progress.is_file() {
        eprintln!(
            "facekit import: nothing to resume ({} does not exist); importing from the start",
            progress.display()
        );
        return Ok(None);
    }
    let p = Progress::read_for(&progress, now)?;
    check_shards(paths, &p.shards).context("cannot resume; import again without --resume")?;
    if paths.manifest().exists() && !p.finished {
        bail!(
            "cannot resume: {} has a manifest, so a finished dataset is there, but the progress file {} belongs to an unfinished import; nothing was changed",
            paths.manifest().display(),
            progress.display()
        );
    }
    Ok(Some(p))
}

struct Ctx<'a> {
    source: &'a Source,
    progress: PathBuf,
    rec: String,
    stop_after: Option<usize>,
}

/// The writer thread's state.
struct Sink {
    writer: DatasetWriter,
    rejects: RejectsLog,
    counters: ImportCounters,
    consumed: u64,
    checkpoints: usize,
}

impl Sink {
    /// Takes one entry's outcome; false when a test hook stops the import here.
    fn accept(&mut self, ctx: &Ctx, entry: Entry, outcome: Outcome) -> Result<bool> {
        match outcome {
            Outcome::Rejected(reason, detail) => {
                self.counters.rejected += 1;
                *self.counters.rejected_by_reason.entry(reason.code().into()).or_default() += 1;
                self.rejects.push(&Reject { path: format!("{}@{}", ctx.rec, entry.offset), reason, detail })?;
            }
            Outcome::Imported(record) => {
                let class = record.labels.class_id.expect("imported records have a class");
                self.counters.max_class = Some(self.counters.max_class.map_or(class, |m| m.max(class)));
                *self.counters.by_encoding.entry(encoding_name(record.encoding).into()).or_default() += 1;
                let closed = self.writer.push(&record).with_context(|| format!("writing record {}", record.path))?;
                if closed.is_some() {
                    // The shard holds every entry before this one: checkpoint there.
                    self.checkpoint(ctx)?;
                    if ctx.stop_after.is_some_and(|n| self.checkpoints >= n) {
                        return Ok(false);
                    }
                }
                self.counters.imported += 1;
            }
        }
        self.consumed += 1;
        Ok(true)
    }

    /// Counts and lists one entry or region the plan left out (all of them are listed before
    /// the first image).
    fn list_skipped(&mut self, rec: &Path, skip: &Skipped) -> Result<()> {
        if skip.is_damage() {
            self.counters.unreadable += 1;
        } else {
            self.counters.skipped += 1;
        }
        *self.counters.rejected_by_reason.entry(skip.reason.code().into()).or_default() += 1;
        let path = format!("{}@{}", rec.display(), skip.offset);
        self.rejects.push(&Reject { path, reason: skip.reason, detail: skip.detail.clone() })
    }

    fn checkpoint(&mut self, ctx: &Ctx) -> Result<()> {
        let p = Progress {
            format: IMPORT_PROGRESS_FORMAT.into(),
            source: ctx.source.clone(),
            consumed: self.consumed,
            shards: self.writer.shards().to_vec(),
            counters: self.counters.clone(),
            rejects_bytes: self.rejects.sync()?,
            finished: false,
        };
        p.write(&ctx.progress)?;
        self.checkpoints += 1;
        Ok(())
    }
}

fn encoding_name(e: Encoding) -> &'static str {
    match e {
        Encoding::Jpeg => "jpeg",
        Encoding::Png => "png",
        Encoding::Raw => "raw",
        Encoding::RawZstd => "raw-zstd",
    }
}

/// The steps after the final checkpoint, each safe to redo: manifest and label map, the rejects
/// list under its final name, the report, then [`Destination::finish`] (the progress file's
/// removal, or the replacement of a finished dataset).
#[allow(clippy::too_many_arguments)]
fn complete(
    dest: &Destination,
    files: &RecFiles,
    plan: &Plan,
    expect: &Expect,
    p: &Progress,
    started: Instant,
    processed: u64,
    threads: usize,
) -> Result<ImportReport> {
    let paths = dest.work(0);
    let c = &p.counters;
    let classes = expect.classes.property().unwrap_or_else(|| c.max_class.map_or(0, |m| m + 1));
    let rec = p.source.rec.clone();
    if c.imported > 0 {
        let encoding = EncodingInfo {
            format: expect.encoding,
            quality: None,
            chroma: None,
            width: expect.width,
            height: expect.height,
        };
        let sources = vec![SourceInfo { id: 0, name: rec.clone(), class_offset: 0, classes, records: c.imported }];
        let mut manifest = Manifest::new(classes, sources, Some(prealigned(expect)), encoding);
        manifest.origin = Some(OriginInfo {
            format: "mxnet-recordio".into(),
            path: rec.clone(),
            layout: layout_name(&plan.layout).into(),
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
            DatasetWriter::completed(paths.clone(), p.source.shard_size, p.shards.clone()).finish(manifest, &labels)?;
        }
    }
    RejectsLog::complete(&paths.rejects(), p.rejects_bytes)?;
    let elapsed_s = started.elapsed().as_secs_f64();
    let report = ImportReport {
        dataset: dest.shown_name(c.imported > 0),
        rec,
        layout: layout_name(&plan.layout).into(),
        counters: c.clone(),
        classes,
        dataset_bytes: p.shards.iter().map(|s| s.bytes).sum(),
        processed_this_run: processed,
        elapsed_s,
        records_per_s: if elapsed_s > 0.0 { processed as f64 / elapsed_s } else { 0.0 },
        threads,
    };
    facekit_io::durable::write_json(paths.report(), &report)?;
    dest.finish()?;
    Ok(report)
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
