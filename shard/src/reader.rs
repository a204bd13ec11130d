//! Reading shards and datasets. The file is memory-mapped; header, footer and index are validated
//! on open, so that every later access is bounds-checked against numbers already proven
//! consistent with the file's real length. Nothing read from the file decides an allocation size
//! before it has been checked against that length.

use super::error::{Error, Result, ShardError};
use super::format::{self, Footer, Header, IndexEntry, RecordHeader, FOOTER_LEN, HEADER_LEN, INDEX_ENTRY_LEN};
use super::manifest::{DatasetPaths, LabelMap, Manifest};
use super::record::{Labels, Record};
use facekit_io::{bounded, lock};
use memmap2::Mmap;
use std::path::{Path, PathBuf};

/// A borrowed view of one record inside a mapped shard (no copy of the image bytes).
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    /// The validated record header.
    pub header: RecordHeader,
    /// The origin path bytes (UTF-8).
    pub path: &'a [u8],
    /// The encoded image bytes.
    pub payload: &'a [u8],
}

impl RecordView<'_> {
    /// Copies the view into an owned [`Record`].
    pub(crate) fn to_record(self) -> Record {
        Record::from_parts(&self.header, self.path, self.payload)
    }

    /// The record's labels, without copying its payload.
    pub fn labels(&self) -> Labels {
        Labels::from_header(&self.header)
    }
}

/// An open, structurally validated shard.
pub struct ShardReader {
    path: PathBuf,
    map: Mmap,
    header: Header,
    footer: Footer,
    index: Vec<IndexEntry>,
}

impl ShardReader {
    /// Opens a shard and validates its header, footer and index (not the records: see
    /// [`ShardReader::record`] and `verify`).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = bounded::open_regular(&path)?;
        // SAFETY: shards are immutable once renamed into place, and facekit's writers cannot
        // replace a dataset while a reader holds its shared lock ([`Dataset::open`]). A file
        // truncated by some other program while mapped is outside what any reader can defend
        // against (the kernel then raises SIGBUS).
        let map = unsafe { Mmap::map(&file) }.map_err(Error::io("map", &path))?;
        #[cfg(unix)]
        let _ = map.advise(memmap2::Advice::Sequential);
        Self::from_map(path.clone(), map).map_err(|source| Error::Corrupt { path, source })
    }

    fn from_map(path: PathBuf, map: Mmap) -> Result<Self, ShardError> {
        let (header, footer, index) = parse_structure(&map)?;
        Ok(ShardReader { path, map, header, footer, index })
    }

    /// Validates the structure (header, footer, index) of shard bytes held in memory; returns the
    /// record count.
    pub fn validate_bytes(b: &[u8]) -> Result<usize, ShardError> {
        parse_structure(b).map(|(_, _, index)| index.len())
    }

    /// The shard's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The shard header.
    pub fn header(&self) -> Header {
        self.header
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True when the shard holds no record.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// File size in bytes.
    pub fn file_len(&self) -> u64 {
        self.map.len() as u64
    }

    /// The whole file's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// The index entries.
    pub fn index(&self) -> &[IndexEntry] {
        &self.index
    }

    /// The footer.
    pub fn footer(&self) -> Footer {
        self.footer
    }

    /// Record `i`, checked (magic, bounds, CRC) but not copied.
    pub fn record(&self, i: usize) -> Result<RecordView<'_>, ShardError> {
        let entry = self
            .index
            .get(i)
            .ok_or_else(|| ShardError::corrupt(0, format!("record {i} out of range ({} records)", self.index.len())))?;
        check_record(&self.map, entry).map_err(|e| e.in_record(i as u64))
    }

    /// Record `i` as an owned [`Record`].
    pub fn get(&self, i: usize) -> Result<Record, ShardError> {
        self.record(i).map(|v| v.to_record())
    }

    /// All records in order.
    pub fn iter(&self) -> impl Iterator<Item = Result<RecordView<'_>, ShardError>> + '_ {
        (0..self.len()).map(move |i| self.record(i))
    }
}

/// Validates header, footer and index of a shard's bytes.
pub(crate) fn parse_structure(b: &[u8]) -> Result<(Header, Footer, Vec<IndexEntry>), ShardError> {
    let header = Header::decode(b)?;
    let file_len = b.len() as u64;
    let footer_at = b.len().saturating_sub(FOOTER_LEN);
    let footer = Footer::decode(&b[footer_at..], file_len)?;
    let index_bytes = &b[footer.index_offset as usize..footer_at];
    if crc32fast::hash(index_bytes) != footer.index_crc32 {
        return Err(ShardError::corrupt(footer.index_offset, "index CRC mismatch"));
    }
    let index = parse_index(index_bytes, footer.index_offset)?;
    Ok((header, footer, index))
}

/// Checks that index entries tile the record area exactly: the first starts after the header,
/// each starts where the previous ends, the last ends where the index begins.
fn parse_index(bytes: &[u8], index_offset: u64) -> Result<Vec<IndexEntry>, ShardError> {
    let mut index = Vec::with_capacity(bytes.len() / INDEX_ENTRY_LEN);
    let mut expected = HEADER_LEN as u64;
    for (i, chunk) in bytes.chunks_exact(INDEX_ENTRY_LEN).enumerate() {
        let e = IndexEntry::decode(chunk);
        let at = index_offset + (i * INDEX_ENTRY_LEN) as u64;
        if e.offset != expected {
            return Err(ShardError::corrupt(
                at,
                format!("index entry {i} points at {}, expected {expected}", e.offset),
            )
            .in_record(i as u64));
        }
        if (e.len as u64) < format::RECORD_HEADER_LEN as u64 || e.offset + e.len as u64 > index_offset {
            return Err(
                ShardError::corrupt(at, format!("index entry {i} has impossible length {}", e.len)).in_record(i as u64)
            );
        }
        expected = e.offset + e.len as u64;
        index.push(e);
    }
    if expected != index_offset {
        return Err(ShardError::corrupt(
            index_offset,
            format!("records end at {expected} but the index starts at {index_offset}"),
        ));
    }
    Ok(index)
}

/// Checks one record against its index entry and returns a view of it.
pub(crate) fn check_record<'a>(b: &'a [u8], entry: &IndexEntry) -> Result<RecordView<'a>, ShardError> {
    let start = entry.offset as usize;
    let end = start + entry.len as usize; // bounds proven by parse_index
    let rec = &b[start..end];
    let header = RecordHeader::decode(rec, entry.offset)?;
    if header.record_len() != entry.len as u64 {
        return Err(ShardError::corrupt(
            entry.offset,
            format!("record claims {} bytes, the index says {}", header.record_len(), entry.len),
        ));
    }
    if header.class_id != entry.class_id {
        return Err(ShardError::corrupt(entry.offset + 8, "class id differs between record and index"));
    }
    let path_end = format::RECORD_HEADER_LEN + header.path_len as usize;
    let path = &rec[format::RECORD_HEADER_LEN..path_end];
    let payload = &rec[path_end..];
    if format::record_crc(rec, path, payload) != header.crc32 {
        return Err(ShardError::corrupt(entry.offset, "record CRC mismatch"));
    }
    Ok(RecordView { header, path, payload })
}

/// A whole dataset: its manifest, label map and shards, addressed by one global record number.
pub struct Dataset {
    /// Shared lock on the dataset: no facekit writer replaces it while it is open.
    _lock: Option<lock::Lock>,
    paths: DatasetPaths,
    manifest: Manifest,
    labels: LabelMap,
    shards: Vec<ShardReader>,
    /// `starts[k]` is the global number of shard k's first record; one extra entry holds the total.
    starts: Vec<u64>,
}

impl Dataset {
    /// Opens a dataset and checks that its manifest is sound ([`Manifest::problems`]), that
    /// every file it names lies in its folder, that its label map has one line per class and that
    /// its shards agree with it in count and size.
    pub fn open(paths: DatasetPaths) -> Result<Self> {
        let lock = lock::shared(&paths.lock(), &format!("dataset {}", paths.dir().join(paths.name()).display()))?;
        let mpath = paths.manifest();
        let manifest = Manifest::read(&mpath)?;
        let problems = manifest.problems();
        if !problems.is_empty() {
            return Err(Error::invalid(&mpath, format!("is not valid: {}", problems.join("; "))));
        }
        let labels_path = bounded::confined_join(paths.dir(), &manifest.label_map)?;
        let labels = LabelMap::read(&labels_path)?;
        if labels.entries.len() as u64 != u64::from(manifest.classes) {
            return Err(Error::invalid(
                &labels_path,
                format!(
                    "(label map) lists {} classes, manifest {} says {}",
                    labels.entries.len(),
                    mpath.display(),
                    manifest.classes
                ),
            ));
        }
        let mut shards = Vec::with_capacity(manifest.shards.len());
        let mut starts = vec![0u64];
        for info in &manifest.shards {
            let path = bounded::confined_join(paths.dir(), &info.file)?;
            let shard = ShardReader::open(&path)?;
            if shard.len() as u64 != info.records || shard.file_len() != info.bytes {
                return Err(Error::invalid(
                    &path,
                    format!(
                        "disagrees with manifest {}: {} records and {} bytes, the manifest says {} and {}",
                        mpath.display(),
                        shard.len(),
                        shard.file_len(),
                        info.records,
                        info.bytes
                    ),
                ));
            }
            starts.push(starts.last().copied().unwrap_or(0) + info.records);
            shards.push(shard);
        }
        Ok(Dataset { _lock: lock, paths, manifest, labels, shards, starts })
    }

    /// Resolves a dataset name (see [`DatasetPaths::resolve`]) and opens it.
    pub fn open_name(arg: &str, data_dir: Option<&Path>) -> Result<Self> {
        Self::open(DatasetPaths::resolve(arg, data_dir)?)
    }

    /// The dataset's file names.
    pub fn paths(&self) -> &DatasetPaths {
        &self.paths
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The label map.
    pub fn labels(&self) -> &LabelMap {
        &self.labels
    }

    /// The shards, in order.
    pub fn shards(&self) -> &[ShardReader] {
        &self.shards
    }

    /// Total number of records.
    pub fn len(&self) -> usize {
        *self.starts.last().unwrap_or(&0) as usize
    }

    /// True when the dataset holds no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Which shard holds global record `i`, and its number there.
    pub fn locate(&self, i: usize) -> Option<(usize, usize)> {
        if i >= self.len() {
            return None;
        }
        let k = self.starts.partition_point(|&s| s <= i as u64) - 1;
        Some((k, i - self.starts[k] as usize))
    }

    /// Global record `i`, checked (magic, bounds, CRC, and what the manifest promises: its class
    /// id below `classes`, its image of the manifest's encoding and size, which bounds any decode
    /// buffer), without copying. The error names the shard and record.
    pub fn record(&self, i: usize) -> Result<RecordView<'_>> {
        let (k, j) = self.locate(i).ok_or_else(|| {
            Error::invalid(self.paths.manifest(), format!("has no record {i} ({} records)", self.len()))
        })?;
        let shard = &self.shards[k];
        let corrupt = |source: ShardError| Error::Corrupt { path: shard.path().to_path_buf(), source };
        let view = shard.record(j).map_err(corrupt)?;
        let (h, m) = (&view.header, &self.manifest);
        let at = shard.index()[j].offset;
        if h.class_id != format::UNKNOWN_CLASS && h.class_id >= m.classes {
            let reason = format!("class id {} is not below the manifest's {} classes", h.class_id, m.classes);
            return Err(corrupt(ShardError::corrupt(at + 8, reason).in_record(j as u64)));
        }
        if (u32::from(h.width), u32::from(h.height)) != (m.encoding.width, m.encoding.height)
            || h.encoding != m.encoding.format.code()
        {
            let reason = format!(
                "a {}x{} image of encoding {}, but the manifest says every record is {}x{} {:?}",
                h.width, h.height, h.encoding, m.encoding.width, m.encoding.height, m.encoding.format
            );
            return Err(corrupt(ShardError::corrupt(at, reason).in_record(j as u64)));
        }
        Ok(view)
    }

    /// Global record `i` as an owned [`Record`].
    pub fn get(&self, i: usize) -> Result<Record> {
        self.record(i).map(|v| v.to_record())
    }

    /// The class id of every record, read from the indexes only (`None` where unknown).
    pub fn class_ids(&self) -> Vec<Option<u32>> {
        self.shards
            .iter()
            .flat_map(|s| s.index().iter())
            .map(|e| (e.class_id != format::UNKNOWN_CLASS).then_some(e.class_id))
            .collect()
    }
}
