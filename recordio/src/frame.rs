//! The framing of a `.rec` file (dmlc-core `include/dmlc/recordio.h`, `src/recordio.cc`) and
//! [`RecReader`], which reads one record at any offset.
//!
//! A record is one or more parts, each `u32 MAGIC`, `u32 lrec` (`cflag << 29 | length`),
//! `length` bytes, zero padding to a multiple of 4. A payload that holds the magic number at a
//! 4-byte-aligned position is split there (cflag 1 start, 2 middle, 3 end) and the magic is
//! re-inserted between the parts on reading, so that a reader looking for record boundaries at
//! aligned positions never mistakes payload bytes for a header.

use crate::error::{Error, FrameError};
use crate::scan::Scan;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The magic number that starts every part (little-endian on disk: `0a 23 d7 ce`).
pub const MAGIC: u32 = 0xced7230a;
/// The largest length one part can announce: `lrec` keeps 29 bits for it.
pub const MAX_LENGTH: u32 = (1 << 29) - 1;
/// Bytes of a part header: magic and `lrec`.
pub const HEADER_LEN: u64 = 8;

/// A whole record: a payload with the magic re-inserted between split parts.
pub const CFLAG_WHOLE: u32 = 0;
/// The first part of a split record.
pub const CFLAG_START: u32 = 1;
/// A middle part of a split record.
pub const CFLAG_MIDDLE: u32 = 2;
/// The last part of a split record.
pub const CFLAG_END: u32 = 3;

/// `lrec` for a part: continuation flag in the top 3 bits, length in the low 29.
pub fn encode_lrec(cflag: u32, length: u32) -> u32 {
    debug_assert!(cflag <= 3 && length <= MAX_LENGTH);
    (cflag << 29) | length
}

/// The continuation flag and length of an `lrec`.
pub fn decode_lrec(lrec: u32) -> (u32, u32) {
    (lrec >> 29, lrec & MAX_LENGTH)
}

/// `length` rounded up to the 4-byte boundary the next part starts at.
pub fn padded(length: u32) -> u64 {
    (u64::from(length) + 3) & !3
}

/// One record read from a `.rec` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Byte offset of the record's first header.
    pub offset: u64,
    /// The reassembled payload.
    pub payload: Vec<u8>,
    /// Byte offset of the following record (after this one's last part and its padding).
    pub next: u64,
}

/// One part of a record, its header checked.
struct Part {
    /// Offset of its bytes.
    data: u64,
    /// How many.
    length: u32,
    /// False when another part follows (a split record's start or middle).
    last: bool,
}

/// Where the bytes come from: a file, or memory (fuzzing, tests).
#[derive(Debug)]
enum Source {
    File(File),
    Bytes(Vec<u8>),
}

/// A `.rec` file opened once and read positionally, so that any number of threads can share
/// `&RecReader` without a lock or a shared cursor.
#[derive(Debug)]
pub struct RecReader {
    source: Source,
    len: u64,
    path: PathBuf,
}

impl RecReader {
    /// Opens a `.rec` file (a regular file: a FIFO or device is refused before it is read).
    ///
    /// No budget applies: RecordIO files of hundreds of gigabytes are normal, and each read is
    /// bounded by its caller's `max_payload` instead.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let file = facekit_io::bounded::open_regular(path)?;
        let len =
            file.metadata().map_err(|source| facekit_io::FileError::Io { path: path.to_path_buf(), source })?.len();
        Ok(RecReader { source: Source::File(file), len, path: path.to_path_buf() })
    }

    /// A reader over bytes in memory, named `<memory>` in messages.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        RecReader { len: bytes.len() as u64, source: Source::Bytes(bytes), path: PathBuf::from("<memory>") }
    }

    /// The file's length in bytes, as it was when opened.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True for an empty file.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The file's path (`<memory>` for [`RecReader::from_bytes`]).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `source` as an [`Error`] naming this reader's file.
    pub fn error(&self, source: FrameError) -> Error {
        Error::frame(&self.path, source)
    }

    /// Reads the record whose first header is at `offset`, reassembling split records.
    ///
    /// Every length is checked against `max_payload` and against the file's length before
    /// anything is allocated, so a header claiming gigabytes costs nothing, and the payload
    /// never holds more bytes than the file does.
    pub fn read_at(&self, offset: u64, max_payload: usize) -> Result<Frame, FrameError> {
        let mut payload = Vec::new();
        let next = self.walk(offset, max_payload, |part| {
            payload.reserve_exact(part.length as usize + if part.last { 0 } else { 4 });
            let at = payload.len();
            payload.resize(at + part.length as usize, 0);
            self.read_exact(part.data, &mut payload[at..])?;
            if !part.last {
                payload.extend_from_slice(&MAGIC.to_le_bytes());
            }
            Ok(())
        })?;
        Ok(Frame { offset, payload, next })
    }

    /// The length of the payload [`RecReader::read_at`] would return for the same arguments, or
    /// the same error, from the part headers alone: a few bytes read, nothing allocated. What
    /// a caller bounding the bytes it holds asks before reading.
    pub fn measure(&self, offset: u64, max_payload: usize) -> Result<u64, FrameError> {
        let mut len = 0;
        self.walk(offset, max_payload, |part| {
            len += u64::from(part.length) + if part.last { 0 } else { 4 };
            Ok(())
        })?;
        Ok(len)
    }

    /// Walks the parts of the record at `offset`, each header checked (magic, flag, order, the
    /// limit, the file's end) before `visit` sees it; returns the offset after the last part.
    fn walk(
        &self,
        offset: u64,
        max_payload: usize,
        mut visit: impl FnMut(&Part) -> Result<(), FrameError>,
    ) -> Result<u64, FrameError> {
        if offset >= self.len {
            return Err(FrameError::PastEnd { offset, file_len: self.len });
        }
        let max = max_payload as u64;
        let mut total = 0u64;
        let mut pos = offset;
        loop {
            let (cflag, length) = self.part_header(pos)?;
            let started = pos != offset;
            match (started, cflag) {
                // dmlc's writer never sets the top bit; its readers would take such a part for
                // the start of a split record and glue the next record to it.
                (_, c) if c > CFLAG_END => return Err(FrameError::BadFlag { offset: pos, cflag: c }),
                (false, CFLAG_MIDDLE | CFLAG_END) => {
                    return Err(FrameError::BadContinuation {
                        offset: pos,
                        reason: "a middle or end part of a split record without its start part",
                    })
                }
                (true, CFLAG_WHOLE | CFLAG_START) => {
                    return Err(FrameError::BadContinuation {
                        offset: pos,
                        reason: "a split record's part is followed by a new record instead of its continuation",
                    })
                }
                _ => {}
            }
            total += u64::from(length);
            if total > max {
                return Err(FrameError::TooLong { offset: pos, length: total, max: max_payload });
            }
            let data = pos + HEADER_LEN;
            let end = data + padded(length);
            if end > self.len {
                return Err(FrameError::Truncated {
                    offset: data,
                    what: "payload",
                    needed: padded(length),
                    file_len: self.len,
                });
            }
            let last = !(cflag == CFLAG_START || cflag == CFLAG_MIDDLE);
            visit(&Part { data, length, last })?;
            pos = end;
            if last {
                return Ok(pos);
            }
            // The magic that split the payload is part of it again.
            total += 4;
            if total > max {
                return Err(FrameError::TooLong { offset: pos, length: total, max: max_payload });
            }
        }
    }

    /// Every record of the file in order, for a `.rec` without its `.idx` (see [`Scan`]).
    pub fn scan(&self, max_payload: usize) -> Scan<'_> {
        Scan::new(self, max_payload)
    }

    /// The continuation flag and length of the part header at `pos`, its magic checked.
    pub(crate) fn part_header(&self, pos: u64) -> Result<(u32, u32), FrameError> {
        if pos.saturating_add(HEADER_LEN) > self.len {
            return Err(FrameError::Truncated { offset: pos, what: "header", needed: HEADER_LEN, file_len: self.len });
        }
        let mut head = [0u8; HEADER_LEN as usize];
        self.read_exact(pos, &mut head)?;
        let magic = u32::from_le_bytes(head[0..4].try_into().expect("4 bytes"));
        if magic != MAGIC {
            return Err(FrameError::BadMagic { offset: pos, found: magic });
        }
        Ok(decode_lrec(u32::from_le_bytes(head[4..8].try_into().expect("4 bytes"))))
    }

    /// Fills `buf` from `offset`; the caller has checked that the file is long enough, so a short
    /// read means the file shrank since it was opened.
    pub(crate) fn read_exact(&self, offset: u64, buf: &mut [u8]) -> Result<(), FrameError> {
        match &self.source {
            Source::Bytes(bytes) => {
                let start = usize::try_from(offset).ok().filter(|&s| s <= bytes.len());
                let src = start.and_then(|s| bytes.get(s..s + buf.len()));
                let src = src.ok_or(FrameError::Truncated {
                    offset,
                    what: "read",
                    needed: buf.len() as u64,
                    file_len: self.len,
                })?;
                buf.copy_from_slice(src);
                Ok(())
            }
            Source::File(file) => file.read_exact_at(buf, offset).map_err(|source| {
                if source.kind() == std::io::ErrorKind::UnexpectedEof {
                    FrameError::Truncated {
                        offset,
                        what: "read (the file shrank)",
                        needed: buf.len() as u64,
                        file_len: self.len,
                    }
                } else {
                    FrameError::Io { offset, source }
                }
            }),
        }
    }
}
