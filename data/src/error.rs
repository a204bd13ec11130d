//! What can go wrong while loading, as a type. Every error about one record names its shard file,
//! its record number in that shard and the byte offset of its header (as `facekit_shard::Error`
//! does for the format), so that a user can find it with `verify-shard` or a hex editor.

use std::fmt;
use std::path::PathBuf;

/// An error of the loader.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The settings contradict each other or are out of range; nothing was read.
    #[error("{0}")]
    Config(String),
    /// A dataset cannot be opened as a loader input (for example a class id beyond its manifest).
    #[error(transparent)]
    Dataset(#[from] facekit_shard::Error),
    /// One record cannot be used: it fails its checks (CRC, manifest) or does not decode.
    #[error("{}", .0)]
    Record(Box<RecordError>),
    /// Every record of this rank's epoch is corrupt (with `skip_corrupt` there is nothing left
    /// to fill a batch with).
    #[error("every record of this rank's epoch is corrupt; the last one: {last}")]
    AllCorrupt {
        /// The last record that failed.
        last: Box<RecordError>,
    },
    /// The caller's slot allocator could not give a batch its memory.
    #[error("cannot allocate a batch slot of {bytes} bytes: {reason}")]
    Alloc {
        /// Bytes asked for.
        bytes: usize,
        /// What the allocator said.
        reason: String,
    },
    /// A decode thread panicked (a bug: please report it with the dataset that caused it).
    #[error("a decode thread of the loader panicked")]
    WorkerLost,
}

/// The loader's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The record this error is about, when it is about one.
    pub fn record(&self) -> Option<&RecordError> {
        match self {
            Error::Record(r) | Error::AllCorrupt { last: r } => Some(r),
            _ => None,
        }
    }
}

/// One record that cannot be used, and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError {
    /// Global record number over the loader's concatenated datasets.
    pub index: u64,
    /// The shard file that holds it.
    pub shard: PathBuf,
    /// Its record number in that shard.
    pub record: u64,
    /// Byte offset in the shard file where the problem was found (the record's header for a
    /// payload that does not decode).
    pub offset: u64,
    /// The origin path stored in the record, when the record could be read that far.
    pub origin: Option<String>,
    /// What is wrong.
    pub problem: Problem,
}

/// What is wrong with a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The bytes fail the format's checks (magic, bounds, CRC, what the manifest promises).
    Corrupt(String),
    /// The record is intact but its payload does not decode to the image its header announces.
    Undecodable(DecodeError),
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match &self.problem {
            Problem::Corrupt(reason) => format!("is corrupt: {reason}"),
            Problem::Undecodable(e) => format!("does not decode: {e}"),
        };
        write!(f, "record {} of shard {} (at byte {}", self.record, self.shard.display(), self.offset)?;
        if let Some(origin) = &self.origin {
            write!(f, ", origin '{origin}'")?;
        }
        write!(f, "; record {} of the loader) {what}", self.index)
    }
}

impl std::error::Error for RecordError {}

impl From<RecordError> for Error {
    fn from(e: RecordError) -> Self {
        Error::Record(Box::new(e))
    }
}

/// A payload that does not decode, or a decode the caller asked for that cannot be done (an
/// output size out of range). Carries no location: [`RecordError`] adds it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

impl DecodeError {
    pub(crate) fn new(reason: impl Into<String>) -> Self {
        DecodeError(reason.into())
    }
}
