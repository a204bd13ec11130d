//! Finding what `facekit import rec PATH` reads: the `.rec`, its `.idx` and `property`, and the
//! list of records to import, in the order they will be written.

use crate::reason::RejectReason;
use anyhow::{bail, Context, Result};
use facekit_recordio::index::Replaced;
use facekit_recordio::{Index, Layout, Property, RecReader};
use std::path::{Path, PathBuf};

/// Largest payload of one record accepted on import (a 112x112 JPEG is about 5 KB; a record
/// claiming more is damage, and must not make facekit allocate what it claims).
pub const MAX_RECORD_BYTES: usize = 64 << 20;

/// The files of an insightface folder (or of a lone `.rec`).
#[derive(Debug, Clone)]
pub struct RecFiles {
    /// The record file.
    pub rec: PathBuf,
    /// Its index (`key<TAB>offset` lines), when there is one.
    pub idx: Option<PathBuf>,
    /// insightface's `property` (`classes,height,width`), when there is one.
    pub property: Option<PathBuf>,
}

impl RecFiles {
    /// `path` is a folder holding `train.rec` (or exactly one `.rec`), or a `.rec` file; the
    /// `.idx` of the same name and a `property` file beside it are used when present.
    pub fn locate(path: &Path) -> Result<Self> {
        let rec = if path.is_dir() {
            let train = path.join("train.rec");
            if train.is_file() {
                train
            } else {
                let mut recs: Vec<PathBuf> = std::fs::read_dir(path)
                    .with_context(|| format!("cannot list {}", path.display()))?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "rec") && p.is_file())
                    .collect();
                recs.sort();
                match recs.len() {
                    1 => recs.remove(0),
                    0 => {
                        bail!("{} holds no .rec file (expected train.rec, as insightface folders have)", path.display())
                    }
                    n => bail!("{} holds {n} .rec files and no train.rec: name the one to import", path.display()),
                }
            }
        } else if path.is_file() {
            path.to_path_buf()
        } else if path.exists() {
            // A FIFO or device would block or never end: refused, not read.
            bail!("{} is neither a folder nor a regular .rec file", path.display());
        } else {
            bail!("{} does not exist", path.display());
        };
        let idx = Some(rec.with_extension("idx")).filter(|p| p.is_file());
        let property = rec.parent().map(|d| d.join("property")).filter(|p| p.is_file());
        Ok(RecFiles { rec, idx, property })
    }

    /// The `property` file's contents, if there is one.
    pub(crate) fn read_property(&self) -> Result<Option<Property>> {
        self.property.as_deref().map(|p| Property::read(p).map_err(anyhow::Error::from)).transpose()
    }
}

/// One record to import: where it starts, and its key when an index gave one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The key from the `.idx` (`None` for a scanned file: the record's header says it).
    pub key: Option<u64>,
    /// Byte offset of the record's first frame in the `.rec`.
    pub offset: u64,
}

/// What the import will read, decided before anything is written.
#[derive(Debug)]
pub struct Plan {
    /// The image records, in file order, each record once.
    pub entries: Vec<Entry>,
    /// insightface's layout (header and identity records) or im2rec's (images only).
    pub layout: Layout,
    /// Records of the layout itself (header, identities), not imported as images.
    pub layout_records: u64,
    /// What is read as no image: damaged regions of a scan, `.idx` lines MXNet would not read or
    /// that name a record again; listed as rejects before any image.
    pub skipped: Vec<Skipped>,
}

/// An index entry or a region of the file that the import leaves out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Byte offset in the `.rec` (the entry's, or where the damage was found).
    pub offset: u64,
    /// The reject code it is listed under.
    pub reason: RejectReason,
    /// What is wrong, naming the key or the `.idx` line.
    pub detail: String,
}

impl Skipped {
    /// True for a damaged region of a scanned file (counted as `unreadable`), false for an
    /// index entry left out.
    pub(crate) fn is_damage(&self) -> bool {
        self.reason == RejectReason::BadRecord
    }
}

impl Plan {
    /// Reads the index (or scans the file) and the header record.
    pub fn make(files: &RecFiles, reader: &RecReader) -> Result<Self> {
        match &files.idx {
            Some(idx) => Ok(Self::from_index(Index::read(idx)?, &idx_name(idx), reader)),
            None => Ok(Self::from_scan(reader)),
        }
    }

    /// The plan of an `.idx` (`idx_name` names it in rejects) over `reader`, read as MXNet reads
    /// it: each key once (its last line), and here each record once, so that no image is
    /// imported twice; every line left out is listed.
    pub fn from_index(index: Index, idx_name: &str, reader: &RecReader) -> Self {
        let mut skipped: Vec<Skipped> = index.replaced.iter().map(|r| replaced(r, idx_name)).collect();
        let mut entries = index.entries;
        // The file's own order: sequential reads, and the order MXNet wrote.
        entries.sort_by_key(|e| (e.offset, e.key));
        let header0 = entries.iter().find(|e| e.key == 0).and_then(|e| reader.read_at(e.offset, MAX_RECORD_BYTES).ok());
        let unpacked = header0.as_ref().and_then(|f| facekit_recordio::unpack(&f.payload).ok());
        let layout = Layout::detect(unpacked.as_ref());
        let mut images: Vec<Entry> = Vec::with_capacity(entries.len());
        let mut layout_records = 0;
        for e in &entries {
            match role(&layout, e.key) {
                Role::Image => match images.last() {
                    Some(prev) if prev.offset == e.offset => skipped.push(Skipped {
                        offset: e.offset,
                        reason: RejectReason::RepeatedEntry,
                        detail: format!("key {}: names the record at byte {} that key {} already names; it is imported once", e.key, e.offset, prev.key.unwrap_or(0)),
                    }),
                    _ => images.push(Entry { key: Some(e.key), offset: e.offset }),
                },
                Role::Layout => layout_records += 1,
                Role::Outside { images, identities } => skipped.push(Skipped {
                    offset: e.offset,
                    reason: RejectReason::OutsideLayout,
                    detail: format!(
                        "key {}: neither an image key ({}..{}) nor an identity key ({}..{}) of insightface's layout; arcface_torch never reads it",
                        e.key, images.start, images.end, identities.start, identities.end
                    ),
                }),
            }
        }
        skipped.sort_by_key(|s| s.offset);
        Plan { entries: images, layout, layout_records, skipped }
    }

    fn from_scan(reader: &RecReader) -> Self {
        let mut entries = Vec::new();
        let mut skipped = Vec::new();
        let mut layout_records = 0;
        let mut record0 = None;
        for frame in reader.scan(MAX_RECORD_BYTES) {
            match frame {
                Ok(f) => match facekit_recordio::unpack(&f.payload) {
                    // Header and identity records carry a label range and no image.
                    Ok(u) if u.image.is_empty() && u.header.flag >= 2 => {
                        layout_records += 1;
                        if u.header.id == 0 {
                            record0 = Some((u.header, u.labels.clone()));
                        }
                    }
                    _ => entries.push(Entry { key: None, offset: f.offset }),
                },
                Err(e) => {
                    skipped.push(Skipped { offset: e.offset(), reason: RejectReason::BadRecord, detail: e.to_string() })
                }
            }
        }
        let layout = match &record0 {
            Some((header, labels)) => {
                let u = facekit_recordio::Unpacked { header: *header, labels: labels.clone(), image: &[] };
                Layout::detect(Some(&u))
            }
            None => Layout::Plain,
        };
        Plan { entries, layout, layout_records, skipped }
    }
}

/// What a key is in a layout.
enum Role<'a> {
    Image,
    /// Record 0 or an identity record.
    Layout,
    /// Outside both of insightface's ranges: insightface's own reader, which takes keys
    /// `1..header.label[0]`, never reads it.
    Outside {
        images: &'a std::ops::Range<u64>,
        identities: &'a std::ops::Range<u64>,
    },
}

fn role(layout: &Layout, key: u64) -> Role<'_> {
    match layout {
        Layout::Plain => Role::Image,
        Layout::Insightface { images, .. } if images.contains(&key) => Role::Image,
        Layout::Insightface { identities, .. } if key == 0 || identities.contains(&key) => Role::Layout,
        Layout::Insightface { images, identities } => Role::Outside { images, identities },
    }
}

/// The reject of an `.idx` line that a later line of its key replaced.
fn replaced(r: &Replaced, idx_name: &str) -> Skipped {
    Skipped {
        offset: r.entry.offset,
        reason: RejectReason::RepeatedEntry,
        detail: format!(
            "key {}: line {} of {idx_name} (byte {}) is replaced by line {}, which lists the key again (MXNet keeps a key's last line)",
            r.entry.key, r.line, r.entry.offset, r.by_line
        ),
    }
}

/// The file name of an `.idx`, for rejects.
fn idx_name(idx: &Path) -> String {
    idx.file_name().map_or_else(|| idx.display().to_string(), |n| n.to_string_lossy().into_owned())
}

/// `insightface` or `im2rec`, as written in the manifest and the report.
pub(crate) fn layout_name(layout: &Layout) -> &'static str {
    match layout {
        Layout::Insightface { .. } => "insightface",
        Layout::Plain => "im2rec",
    }
}
