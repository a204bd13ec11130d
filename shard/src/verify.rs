//! Verification: every byte of a shard or dataset is checked, and every problem is reported with
//! the shard, record number and byte offset, instead of stopping at the first one.

use super::error::{Error, Result, ShardError};
use super::format::{Encoding, Header, RecordHeader, FOOTER_LEN, HEADER_LEN};
use super::manifest::{DatasetPaths, Manifest, ShardInfo};
use super::reader::{check_record, parse_structure};
use facekit_io::{bounded, lock};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// One problem found by verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The file where the problem is.
    pub file: String,
    /// The record number, when the problem belongs to one record.
    pub record: Option<u64>,
    /// Byte offset in `file`, when known.
    pub offset: Option<u64>,
    /// What is wrong.
    pub reason: String,
}

/// What verification found in one shard.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ShardReport {
    /// The shard's path.
    pub file: String,
    /// File size in bytes.
    pub bytes: u64,
    /// CRC32 of the whole file.
    pub crc32: u32,
    /// Records found (by the index, or by a sequential scan when the index is unusable).
    pub records: u64,
    /// Records whose checks all passed.
    pub good_records: u64,
    /// Everything wrong in this shard.
    pub problems: Vec<Problem>,
}

/// Decodes a payload of the given encoding that claims `width` x `height`, and returns the size
/// it really has (or why it does not decode). This crate has no image codec: the caller brings
/// one (facekit's is `facekit_data::codec::decoded_size`).
pub type PayloadCheck = dyn Fn(Encoding, &[u8], u16, u16) -> std::result::Result<(u32, u32), String> + Sync;

/// Options for verification.
#[derive(Clone, Copy, Default)]
pub struct VerifyOptions<'a> {
    /// Also decode every image with this and check its size against the record header.
    pub decode: Option<&'a PayloadCheck>,
}

/// Verifies one shard file. Only I/O failures are errors; corruption is reported in the result.
pub fn verify_shard(path: &Path, opts: VerifyOptions<'_>, on_bytes: &(dyn Fn(u64) + Sync)) -> Result<ShardReport> {
    let file = bounded::open_regular(path)?;
    let len = file.metadata().map_err(Error::io("stat", path))?.len();
    let map;
    let bytes: &[u8] = if len == 0 {
        &[]
    } else {
        // SAFETY: read-only map of a file we do not modify.
        map = unsafe { memmap2::Mmap::map(&file) }.map_err(Error::io("map", path))?;
        &map
    };
    Ok(verify_bytes(&path.display().to_string(), bytes, opts, on_bytes))
}

/// Verifies shard bytes already in memory.
pub fn verify_bytes(name: &str, b: &[u8], opts: VerifyOptions<'_>, on_bytes: &(dyn Fn(u64) + Sync)) -> ShardReport {
    let mut report = ShardReport { file: name.to_string(), bytes: b.len() as u64, ..Default::default() };
    let mut problem = |e: ShardError, rep: &mut ShardReport| {
        rep.problems.push(Problem {
            file: name.to_string(),
            record: e.record,
            offset: Some(e.offset),
            reason: e.reason,
        })
    };
    report.crc32 = crc32fast::hash(b);

    match parse_structure(b) {
        Ok((_header, _footer, index)) => {
            report.records = index.len() as u64;
            let mut done = 0u64;
            for (i, entry) in index.iter().enumerate() {
                match check_record(b, entry).and_then(|v| decode_check(&v.header, v.payload, opts, entry.offset)) {
                    Ok(()) => report.good_records += 1,
                    Err(e) => problem(e.in_record(i as u64), &mut report),
                }
                done += entry.len as u64;
                if done >= 64 << 20 {
                    on_bytes(done);
                    done = 0;
                }
            }
            on_bytes(done + (HEADER_LEN + FOOTER_LEN) as u64 + report.records * 16);
        }
        Err(structural) => {
            problem(structural, &mut report);
            // The index cannot be trusted: walk the records from the start to say which are intact.
            if let Err(e) = Header::decode(b) {
                if report.problems.last().map(|p| p.offset) != Some(Some(e.offset)) {
                    problem(e, &mut report);
                }
            }
            scan_records(b, opts, &mut report, &mut problem);
            on_bytes(b.len() as u64);
        }
    }
    report
}

/// Sequential walk used when the index is unusable: follows record lengths from the header on.
fn scan_records(
    b: &[u8],
    opts: VerifyOptions<'_>,
    report: &mut ShardReport,
    problem: &mut impl FnMut(ShardError, &mut ShardReport),
) {
    let mut off = HEADER_LEN as u64;
    let mut i = 0u64;
    while (off as usize) + super::format::RECORD_HEADER_LEN <= b.len() {
        let Ok(h) = RecordHeader::decode(&b[off as usize..], off) else { break };
        let end = off + h.record_len();
        if end > b.len() as u64 {
            problem(ShardError::corrupt(off, "record runs past the end of the file (truncated)").in_record(i), report);
            i += 1;
            break;
        }
        let entry = super::format::IndexEntry { offset: off, len: h.record_len() as u32, class_id: h.class_id };
        match check_record(b, &entry).and_then(|v| decode_check(&v.header, v.payload, opts, off)) {
            Ok(()) => report.good_records += 1,
            Err(e) => problem(e.in_record(i), report),
        }
        off = end;
        i += 1;
    }
    report.records = i;
}

fn decode_check(h: &RecordHeader, payload: &[u8], opts: VerifyOptions<'_>, offset: u64) -> Result<(), ShardError> {
    let Some(decode) = opts.decode else { return Ok(()) };
    let enc = Encoding::from_code(h.encoding).expect("validated");
    let (w, hgt) = decode(enc, payload, h.width, h.height)
        .map_err(|e| ShardError::corrupt(offset, format!("image does not decode: {e}")))?;
    if (w, hgt) != (h.width as u32, h.height as u32) {
        return Err(ShardError::corrupt(
            offset,
            format!("image is {w}x{hgt}, the record says {}x{}", h.width, h.height),
        ));
    }
    Ok(())
}

/// What verification found in a whole dataset.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DatasetReport {
    /// The manifest's path.
    pub manifest: String,
    /// The per-shard reports.
    pub shards: Vec<ShardReport>,
    /// Problems with the manifest's agreement with its shards.
    pub problems: Vec<Problem>,
}

/// Verifies a dataset: its manifest, every shard it lists, and their agreement (counts, sizes,
/// checksums, label ranges), and shards on disk that the manifest does not list.
pub fn verify_dataset(
    paths: &DatasetPaths,
    opts: VerifyOptions<'_>,
    on_bytes: &(dyn Fn(u64) + Sync),
) -> Result<DatasetReport> {
    let _lock = lock::shared(&paths.lock(), &format!("dataset {}", paths.dir().join(paths.name()).display()))?;
    let manifest_path = paths.manifest();
    let manifest = Manifest::read(&manifest_path)?;
    let mname = manifest_path.display().to_string();
    let mut report = DatasetReport { manifest: mname.clone(), ..Default::default() };
    let bad = |reason: String| Problem { file: mname.clone(), record: None, offset: None, reason };
    report.problems.extend(manifest.problems().into_iter().map(bad));

    match bounded::confined_join(paths.dir(), &manifest.label_map) {
        Err(e) => report.problems.push(bad(format!("label map: {e}"))),
        Ok(label_path) => match super::manifest::LabelMap::read(&label_path) {
            Ok(labels) if labels.entries.len() as u64 != manifest.classes as u64 => report.problems.push(bad(format!(
                "label map {} has {} classes, the manifest says {}",
                label_path.display(),
                labels.entries.len(),
                manifest.classes
            ))),
            Ok(_) => {}
            Err(e) => report.problems.push(bad(format!("{e:#}"))),
        },
    }
    // Each listed shard once, and only those inside the dataset's folder: the rest is reported
    // above and never opened.
    let mut listed = std::collections::HashSet::new();
    let shards: Vec<(&ShardInfo, PathBuf)> = manifest
        .shards
        .iter()
        .filter(|info| listed.insert(info.file.as_str()))
        .filter_map(|info| Some((info, bounded::confined_join(paths.dir(), &info.file).ok()?)))
        .filter(|(info, _)| bounded::is_plain_name(&info.file))
        .collect();

    let reports: Vec<Result<ShardReport>> = {
        use rayon::prelude::*;
        shards
            .par_iter()
            .map(|(_, path)| {
                if !path.exists() {
                    return Ok(ShardReport { file: path.display().to_string(), ..Default::default() });
                }
                verify_shard(path, opts, on_bytes)
            })
            .collect()
    };
    for ((info, path), rep) in shards.iter().zip(reports) {
        let (info, path) = (*info, path.as_path());
        let mut rep = match rep {
            Ok(r) => r,
            Err(e) => {
                // Not a regular file, unreadable: a problem of this dataset, not a reason to stop.
                report.shards.push(ShardReport {
                    file: path.display().to_string(),
                    problems: vec![Problem {
                        file: path.display().to_string(),
                        record: None,
                        offset: None,
                        reason: format!("{e:#}"),
                    }],
                    ..Default::default()
                });
                continue;
            }
        };
        if !path.exists() {
            rep.problems.push(Problem {
                file: rep.file.clone(),
                record: None,
                offset: None,
                reason: "shard listed in the manifest is missing".into(),
            });
            report.shards.push(rep);
            continue;
        }
        let mut mismatch = |what: &str, got: String, want: String| {
            rep.problems.push(Problem {
                file: rep.file.clone(),
                record: None,
                offset: None,
                reason: format!("{what} is {got}, the manifest says {want}"),
            })
        };
        if rep.bytes != info.bytes {
            mismatch("size", rep.bytes.to_string(), info.bytes.to_string());
        }
        if rep.crc32 != info.crc32 {
            mismatch("file CRC32", format!("{:08x}", rep.crc32), format!("{:08x}", info.crc32));
        }
        if rep.records != info.records {
            mismatch("record count", rep.records.to_string(), info.records.to_string());
        }
        check_label_ranges(path, &manifest, &mut rep);
        report.shards.push(rep);
    }
    for (n, path) in paths.shards_on_disk()? {
        let fname = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        if !manifest.shards.iter().any(|s| s.file == fname) {
            report
                .problems
                .push(bad(format!("shard {} (number {n}) is on disk but not in the manifest", path.display())));
        }
    }
    Ok(report)
}

/// Class ids must be below `classes`, sources must exist in the manifest, and every record must
/// have the manifest's encoding and image size.
fn check_label_ranges(path: &Path, manifest: &Manifest, rep: &mut ShardReport) {
    let (enc, w, h_) = (manifest.encoding.format, manifest.encoding.width, manifest.encoding.height);
    let Ok(reader) = super::reader::ShardReader::open(path) else { return };
    for (i, view) in reader.iter().enumerate() {
        let Ok(v) = view else { continue };
        let h = v.header;
        let offset = reader.index()[i].offset;
        if h.class_id != super::format::UNKNOWN_CLASS && h.class_id >= manifest.classes {
            rep.problems.push(Problem {
                file: rep.file.clone(),
                record: Some(i as u64),
                offset: Some(offset + 8),
                reason: format!("class id {} is not below the manifest's {} classes", h.class_id, manifest.classes),
            });
        }
        if (u32::from(h.width), u32::from(h.height)) != (w, h_) || h.encoding != enc.code() {
            rep.problems.push(Problem {
                file: rep.file.clone(),
                record: Some(i as u64),
                offset: Some(offset),
                reason: format!(
                    "record is a {}x{} {} image, the manifest says every record is {w}x{h_} {enc:?}",
                    h.width,
                    h.height,
                    Encoding::from_code(h.encoding)
                        .map_or_else(|| format!("encoding {}", h.encoding), |e| format!("{e:?}"))
                ),
            });
        }
        if h.source as usize >= manifest.sources.len().max(1) {
            rep.problems.push(Problem {
                file: rep.file.clone(),
                record: Some(i as u64),
                offset: Some(offset + 12),
                reason: format!("source {} is not in the manifest", h.source),
            });
        }
    }
}

impl ShardReport {
    /// True when nothing is wrong.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

impl DatasetReport {
    /// True when nothing is wrong anywhere in the dataset.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty() && self.shards.iter().all(ShardReport::is_ok)
    }
}
