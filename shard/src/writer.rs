//! Writing shards and datasets. Every file appears atomically: a shard is written under a
//! temporary name and renamed only after its index, footer and fsync, and the manifest is written
//! last, so a dataset without a manifest (or a manifest without its shards) is never mistaken for
//! a complete one.

use super::error::{Error, Result};
use super::format::{self, Footer, Header, IndexEntry, FORMAT_VERSION, HEADER_LEN, MAX_PATH_LEN, MAX_PAYLOAD_LEN};
use super::manifest::{DatasetPaths, LabelMap, Manifest, ShardInfo};
use super::record::Record;
use facekit_io::AtomicFile;
use std::path::Path;

/// Writes one shard file.
pub struct ShardWriter {
    file: AtomicFile,
    offset: u64,
    index: Vec<IndexEntry>,
    file_crc: crc32fast::Hasher,
}

impl ShardWriter {
    /// Starts shard number `shard_number` at `path`.
    pub fn create(path: impl AsRef<Path>, shard_number: u32) -> Result<Self> {
        let mut w = ShardWriter {
            file: AtomicFile::create(path)?,
            offset: 0,
            index: Vec::new(),
            file_crc: crc32fast::Hasher::new(),
        };
        let header = Header { version: FORMAT_VERSION, flags: 0, shard_number };
        w.put(&header.encode())?;
        Ok(w)
    }

    /// Appends a record.
    pub fn push(&mut self, record: &Record) -> Result<()> {
        if record.data.len() > MAX_PAYLOAD_LEN as usize {
            return Err(Error::Unwritable(format!(
                "record payload of {} bytes exceeds the format's limit of {MAX_PAYLOAD_LEN}",
                record.data.len()
            )));
        }
        if u64::from(record.width) * u64::from(record.height) > format::MAX_RECORD_PIXELS {
            return Err(Error::Unwritable(format!(
                "a {}x{} image is larger than a record may hold ({} pixels)",
                record.width,
                record.height,
                format::MAX_RECORD_PIXELS
            )));
        }
        if record.path.len() > MAX_PATH_LEN as usize {
            return Err(Error::Unwritable(format!(
                "origin path of {} bytes exceeds the format's limit of {MAX_PATH_LEN}",
                record.path.len()
            )));
        }
        let mut header = record.header();
        let mut bytes = header.encode();
        header.crc32 = format::record_crc(&bytes, record.path.as_bytes(), &record.data);
        bytes = header.encode();
        let entry = IndexEntry { offset: self.offset, len: header.record_len() as u32, class_id: header.class_id };
        self.put(&bytes)?;
        self.put(record.path.as_bytes())?;
        self.put(&record.data)?;
        self.index.push(entry);
        Ok(())
    }

    /// Bytes written so far (header and records).
    pub(crate) fn bytes_written(&self) -> u64 {
        self.offset
    }

    /// Records written so far.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True when no record has been written.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Writes the index and footer, fsyncs and renames the shard into place.
    pub fn finish(mut self) -> Result<ShardInfo> {
        let index_offset = self.offset;
        let mut index_crc = crc32fast::Hasher::new();
        let index = std::mem::take(&mut self.index);
        for entry in &index {
            let b = entry.encode();
            index_crc.update(&b);
            self.put(&b)?;
        }
        let footer = Footer { index_offset, record_count: index.len() as u64, index_crc32: index_crc.finalize() };
        self.put(&footer.encode())?;
        let target = self.file.target().to_path_buf();
        let info = ShardInfo {
            file: file_name(&target),
            records: index.len() as u64,
            bytes: self.offset,
            crc32: self.file_crc.clone().finalize(),
        };
        self.file.commit()?;
        Ok(info)
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.file.put(bytes)?;
        self.file_crc.update(bytes);
        self.offset += bytes.len() as u64;
        Ok(())
    }
}

/// Writes a dataset: records are appended to shards of about `shard_size` bytes, then
/// [`DatasetWriter::finish`] writes the label map and the manifest.
pub struct DatasetWriter {
    paths: DatasetPaths,
    shard_size: u64,
    current: Option<ShardWriter>,
    done: Vec<ShardInfo>,
}

impl DatasetWriter {
    /// Starts a new dataset. Shards left over from an earlier dataset of the same name are removed
    /// first, so that the result never mixes two runs.
    pub fn create(paths: DatasetPaths, shard_size: u64) -> Result<Self> {
        paths.remove_existing()?;
        Ok(DatasetWriter { paths, shard_size: shard_size.max(HEADER_LEN as u64 + 1), current: None, done: Vec::new() })
    }

    /// Continues a dataset whose first shards (`done`) are complete and verified; later shards
    /// (and any manifest) are removed.
    pub fn resume(paths: DatasetPaths, shard_size: u64, done: Vec<ShardInfo>) -> Result<Self> {
        paths.remove_shards_from(done.len())?;
        let _ = std::fs::remove_file(paths.manifest());
        Ok(DatasetWriter { paths, shard_size: shard_size.max(HEADER_LEN as u64 + 1), current: None, done })
    }

    /// A dataset whose shards (`done`) are all complete, for writing its label map and manifest;
    /// nothing on disk is removed.
    pub fn completed(paths: DatasetPaths, shard_size: u64, done: Vec<ShardInfo>) -> Self {
        DatasetWriter { paths, shard_size: shard_size.max(HEADER_LEN as u64 + 1), current: None, done }
    }

    /// Appends a record. Returns the shard that this push completed, if any, so that a caller can
    /// record its progress for `--resume`.
    pub fn push(&mut self, record: &Record) -> Result<Option<ShardInfo>> {
        let record_len = format::RECORD_HEADER_LEN as u64 + record.path.len() as u64 + record.data.len() as u64;
        let mut completed = None;
        if let Some(cur) = &self.current {
            if !cur.is_empty() && cur.bytes_written() + record_len > self.shard_size {
                completed = Some(self.close_current()?);
            }
        }
        if self.current.is_none() {
            let n = self.done.len();
            self.current = Some(ShardWriter::create(self.paths.shard(n), n as u32)?);
        }
        self.current.as_mut().expect("opened above").push(record)?;
        Ok(completed)
    }

    /// Completes the open shard now, if it has records.
    pub fn flush_shard(&mut self) -> Result<Option<ShardInfo>> {
        match &self.current {
            Some(cur) if !cur.is_empty() => Ok(Some(self.close_current()?)),
            _ => Ok(None),
        }
    }

    /// The shards completed so far.
    pub fn shards(&self) -> &[ShardInfo] {
        &self.done
    }

    /// The dataset's file names.
    pub fn paths(&self) -> &DatasetPaths {
        &self.paths
    }

    /// Completes the last shard, writes the label map and then the manifest (whose `shards`,
    /// `records` and `label_map` fields are filled in here).
    pub fn finish(mut self, mut manifest: Manifest, labels: &LabelMap) -> Result<Manifest> {
        self.flush_shard()?;
        labels.write(&self.paths.labels())?;
        manifest.records = self.done.iter().map(|s| s.records).sum();
        manifest.shards = std::mem::take(&mut self.done);
        manifest.label_map = file_name(&self.paths.labels());
        manifest.name = self.paths.name();
        manifest.write(&self.paths.manifest())?;
        Ok(manifest)
    }

    fn close_current(&mut self) -> Result<ShardInfo> {
        let info = self.current.take().expect("caller checked").finish()?;
        self.done.push(info.clone());
        Ok(info)
    }
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}
