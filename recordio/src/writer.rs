//! Writing a `.rec` and its `.idx` as MXNet's `MXIndexedRecordIO` does, durably: both are written
//! under temporary names and appear only on [`RecWriter::finish`], so an interrupted write never
//! leaves a file that looks complete.

use crate::error::Error;
use crate::frame::{encode_lrec, padded, CFLAG_END, CFLAG_MIDDLE, CFLAG_START, CFLAG_WHOLE, MAGIC, MAX_LENGTH};
use crate::index::{idx_line, IdxEntry};
use facekit_io::AtomicFile;
use std::path::{Path, PathBuf};

/// The largest payload dmlc's `RecordIOWriter::WriteRecord` accepts (it checks `size < 2^30`);
/// each of its parts must also fit in [`MAX_LENGTH`].
pub(crate) const MAX_PAYLOAD: usize = (1 << 30) - 1;

/// A payload the framing cannot hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordTooLarge {
    /// Over dmlc's 2^30 - 1 bytes for a whole record.
    #[error("a payload of {len} bytes is over RecordIO's limit of {MAX_PAYLOAD} bytes")]
    Payload {
        /// The payload's length.
        len: usize,
    },
    /// One stretch between aligned magic numbers over the 29-bit length field.
    #[error("a part of {len} bytes is over RecordIO's limit of {MAX_LENGTH} bytes per part")]
    Part {
        /// The part's length.
        len: usize,
    },
}

/// Appends `payload` framed as dmlc's `RecordIOWriter::WriteRecord` frames it: split wherever the
/// magic number sits at a 4-byte-aligned position of the payload (the magic itself is dropped and
/// re-inserted by readers), each part with its header, the last padded with zeros to 4 bytes.
pub fn encode_record(payload: &[u8], out: &mut Vec<u8>) -> Result<(), RecordTooLarge> {
    if payload.len() > MAX_PAYLOAD {
        return Err(RecordTooLarge::Payload { len: payload.len() });
    }
    let magic = MAGIC.to_le_bytes();
    let splits = payload.chunks_exact(4).enumerate().filter(|(_, c)| *c == magic).map(|(i, _)| 4 * i);
    let mut parts: Vec<(u32, &[u8])> = Vec::new();
    let mut start = 0;
    for at in splits {
        parts.push((if start == 0 { CFLAG_START } else { CFLAG_MIDDLE }, &payload[start..at]));
        start = at + 4;
    }
    parts.push((if start == 0 { CFLAG_WHOLE } else { CFLAG_END }, &payload[start..]));
    if let Some((_, p)) = parts.iter().find(|(_, p)| p.len() > MAX_LENGTH as usize) {
        return Err(RecordTooLarge::Part { len: p.len() });
    }
    for (cflag, part) in parts {
        out.extend_from_slice(&magic);
        out.extend_from_slice(&encode_lrec(cflag, part.len() as u32).to_le_bytes());
        out.extend_from_slice(part);
        // Only the last part can be unaligned: the others end where an aligned magic began.
        out.resize(out.len() + (padded(part.len() as u32) as usize - part.len()), 0);
    }
    Ok(())
}

/// A `.rec` and `.idx` being written.
pub struct RecWriter {
    rec: AtomicFile,
    idx: AtomicFile,
    rec_path: PathBuf,
    offset: u64,
    records: u64,
    buf: Vec<u8>,
}

impl RecWriter {
    /// Starts writing `X.rec` and its index `X.idx` beside it.
    pub fn create(rec_path: impl AsRef<Path>) -> Result<Self, Error> {
        let rec_path = rec_path.as_ref();
        Self::create_with_idx(rec_path, rec_path.with_extension("idx"))
    }

    /// Starts writing a `.rec` and an index at a path of its own.
    pub(crate) fn create_with_idx(rec_path: impl AsRef<Path>, idx_path: impl AsRef<Path>) -> Result<Self, Error> {
        let rec_path = rec_path.as_ref().to_path_buf();
        let rec = AtomicFile::create(&rec_path)?;
        let idx = AtomicFile::create(idx_path)?;
        Ok(RecWriter { rec, idx, rec_path, offset: 0, records: 0, buf: Vec::new() })
    }

    /// Appends a record under `key` and returns its byte offset (what the `.idx` line says).
    pub fn write(&mut self, key: u64, payload: &[u8]) -> Result<u64, Error> {
        self.buf.clear();
        encode_record(payload, &mut self.buf).map_err(|e| Error::Unwritable {
            path: self.rec_path.clone(),
            key,
            reason: e.to_string(),
        })?;
        let offset = self.offset;
        self.rec.put(&self.buf)?;
        self.idx.put(idx_line(IdxEntry { key, offset }).as_bytes())?;
        self.offset += self.buf.len() as u64;
        self.records += 1;
        Ok(offset)
    }

    /// Records written so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Bytes of `.rec` written so far (the offset the next record will have).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Makes both files visible: fsynced, renamed into place.
    ///
    /// An index left from an earlier write is removed first, and the `.rec` is committed before
    /// the `.idx`: a crash in between leaves a complete `.rec` with no index (scannable) rather
    /// than a new `.rec` beside an old index that points into the wrong records.
    pub fn finish(self) -> Result<(), Error> {
        let idx_target = self.idx.target().to_path_buf();
        match std::fs::remove_file(&idx_target) {
            Ok(()) => facekit_io::durable::sync_parent(&idx_target),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(facekit_io::WriteError { op: "remove".into(), path: idx_target, source }.into()),
        }
        self.rec.commit()?;
        self.idx.commit()?;
        Ok(())
    }
}
