//! Finding what `facekit import rec PATH` reads: the `.rec`, its `.idx` and `property`, and the
//! list of records to import, in the order they will be written.

use anyhow::{bail, Context, Result};
use facekit_recordio::{read_idx, Layout, Property, RecReader};
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
                    0 => bail!("{} holds no .rec file (expected train.rec, as insightface folders have)", path.display()),
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
    pub fn read_property(&self) -> Result<Option<Property>> {
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
    /// The image records, in file order.
    pub entries: Vec<Entry>,
    /// insightface's layout (header and identity records) or im2rec's (images only).
    pub layout: Layout,
    /// Records of the layout itself (header, identities), not imported as images.
    pub layout_records: u64,
    /// Frames a scan could not read (offset, what is wrong), listed as rejects before any image.
    pub unreadable: Vec<(u64, String)>,
}

impl Plan {
    /// Reads the index (or scans the file) and the header record.
    pub fn make(files: &RecFiles, reader: &RecReader) -> Result<Self> {
        match &files.idx {
            Some(idx) => Self::from_index(idx, reader),
            None => Ok(Self::from_scan(reader)),
        }
    }

    fn from_index(idx: &Path, reader: &RecReader) -> Result<Self> {
        let mut index = read_idx(idx)?;
        // The file's own order: sequential reads, and the order MXNet wrote.
        index.sort_by_key(|e| (e.offset, e.key));
        let header0 = index.iter().find(|e| e.key == 0).and_then(|e| reader.read_at(e.offset, MAX_RECORD_BYTES).ok());
        let unpacked = header0.as_ref().and_then(|f| facekit_recordio::unpack(&f.payload).ok());
        let layout = Layout::detect(unpacked.as_ref());
        let mut entries = Vec::with_capacity(index.len());
        let mut layout_records = 0;
        for e in &index {
            let is_image = match &layout {
                Layout::Insightface { images, .. } => images.contains(&e.key),
                Layout::Plain => true,
            };
            if is_image {
                entries.push(Entry { key: Some(e.key), offset: e.offset });
            } else {
                // Record 0 and the identity records; a key outside both ranges is not an image
                // either by insightface's own reader, which takes keys 1..header.label[0].
                layout_records += 1;
            }
        }
        Ok(Plan { entries, layout, layout_records, unreadable: Vec::new() })
    }

    fn from_scan(reader: &RecReader) -> Self {
        let mut entries = Vec::new();
        let mut unreadable = Vec::new();
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
                Err(e) => unreadable.push((e.offset(), e.to_string())),
            }
        }
        let layout = match &record0 {
            Some((header, labels)) => {
                let u = facekit_recordio::Unpacked { header: *header, labels: labels.clone(), image: &[] };
                Layout::detect(Some(&u))
            }
            None => Layout::Plain,
        };
        Plan { entries, layout, layout_records, unreadable }
    }
}

/// `insightface` or `im2rec`, as written in the manifest and the report.
pub fn layout_name(layout: &Layout) -> &'static str {
    match layout {
        Layout::Insightface { .. } => "insightface",
        Layout::Plain => "im2rec",
    }
}
