//! What can go wrong with a RecordIO file, as types: [`FrameError`] is a problem in the framing at
//! a byte offset (the reader does not know which file a caller will blame), [`PayloadError`] one
//! inside a record's bytes, and [`Error`] is what the crate's file-level functions return, always
//! naming the file (and the byte offset or line).

use std::path::{Path, PathBuf};

pub use facekit_io::{FileError, WriteError};

/// An error of the RecordIO layer, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read: missing, not a regular file, over its budget.
    #[error(transparent)]
    File(#[from] FileError),
    /// A file could not be written.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// The framing of a `.rec` file is broken.
    #[error("{} is not valid RecordIO: {source}", .path.display())]
    Frame {
        /// The `.rec` file.
        path: PathBuf,
        /// What is wrong, where.
        #[source]
        source: FrameError,
    },
    /// A record's payload is not an `IRHeader` record.
    #[error("{}: record at byte {offset}: {source}", .path.display())]
    Payload {
        /// The `.rec` file.
        path: PathBuf,
        /// Byte offset of the record.
        offset: u64,
        /// What is wrong.
        #[source]
        source: PayloadError,
    },
    /// A line of a text file (`.idx`, `property`) that breaks its format.
    #[error("{} line {line}: {reason}", .path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A payload the format cannot store.
    #[error("{}: record {key} cannot be written: {reason}", .path.display())]
    Unwritable {
        /// The `.rec` file being written.
        path: PathBuf,
        /// The record's key.
        key: u64,
        /// Why.
        reason: String,
    },
}

/// The RecordIO layer's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A framing error found in the file at `path`.
    pub fn frame(path: impl Into<PathBuf>, source: FrameError) -> Self {
        Error::Frame { path: path.into(), source }
    }

    /// A payload error in the record at `offset` of the file at `path`.
    pub fn payload(path: impl Into<PathBuf>, offset: u64, source: PayloadError) -> Self {
        Error::Payload { path: path.into(), offset, source }
    }

    pub(crate) fn line(path: &Path, line: usize, reason: impl Into<String>) -> Self {
        Error::Line { path: path.to_path_buf(), line, reason: reason.into() }
    }
}

/// A problem in the framing of a `.rec` file, with the byte offset where it was found.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The 4 bytes where a record header should start are not the magic number.
    #[error("at byte {offset}: expected the RecordIO magic 0xced7230a, found {found:#010x}")]
    BadMagic {
        /// Where the header should be.
        offset: u64,
        /// What is there instead.
        found: u32,
    },
    /// A header or payload (with its padding) runs past the end of the file.
    #[error("at byte {offset}: {what} of {needed} bytes runs past the end of the file at byte {file_len}")]
    Truncated {
        /// Where the header or payload starts.
        offset: u64,
        /// `header` or `payload`.
        what: &'static str,
        /// Bytes it needs from `offset`.
        needed: u64,
        /// The file's length.
        file_len: u64,
    },
    /// The record is longer than the caller allows (checked before anything is allocated).
    #[error("at byte {offset}: record of at least {length} bytes is over the limit of {max} bytes")]
    TooLong {
        /// Where the header announcing the length is.
        offset: u64,
        /// The payload length reached with this part.
        length: u64,
        /// The caller's limit.
        max: usize,
    },
    /// The parts of a split record do not follow start, middle..., end.
    #[error("at byte {offset}: {reason}")]
    BadContinuation {
        /// Where the offending header is.
        offset: u64,
        /// What is out of order.
        reason: &'static str,
    },
    /// A part header's continuation flag is none of RecordIO's four (0 whole, 1 start, 2 middle,
    /// 3 end): the top bit of `lrec` is set, which no writer does.
    #[error(
        "at byte {offset}: continuation flag {cflag} is none of RecordIO's 0 (whole), 1 (start), 2 (middle), 3 (end)"
    )]
    BadFlag {
        /// Where the part header is.
        offset: u64,
        /// The flag found (4 to 7).
        cflag: u32,
    },
    /// A record was asked for at or after the end of the file (an `.idx` from another file).
    #[error("offset {offset} is at or past the end of the file ({file_len} bytes)")]
    PastEnd {
        /// The offset asked for.
        offset: u64,
        /// The file's length.
        file_len: u64,
    },
    /// The operating system failed to read.
    #[error("at byte {offset}: {source}")]
    Io {
        /// Where the read started.
        offset: u64,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl FrameError {
    /// The byte offset where the problem was found.
    pub fn offset(&self) -> u64 {
        match self {
            FrameError::BadMagic { offset, .. }
            | FrameError::Truncated { offset, .. }
            | FrameError::TooLong { offset, .. }
            | FrameError::BadContinuation { offset, .. }
            | FrameError::BadFlag { offset, .. }
            | FrameError::PastEnd { offset, .. }
            | FrameError::Io { offset, .. } => *offset,
        }
    }
}

/// A record payload that is not an `IRHeader` record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// Fewer bytes than the 24-byte header.
    #[error("payload of {len} bytes is shorter than the 24-byte IRHeader")]
    Short {
        /// The payload's length.
        len: usize,
    },
    /// The header's flag announces more float32 labels than the payload holds.
    #[error("IRHeader announces {flag} labels ({needed} bytes) but only {available} bytes follow it")]
    Labels {
        /// The flag: the number of labels announced.
        flag: u32,
        /// Bytes the labels need.
        needed: u64,
        /// Bytes after the header.
        available: usize,
    },
}
