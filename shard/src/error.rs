//! What can go wrong with a dataset, as a type: callers match on it, users read its message, which
//! always names the file (and the record and byte offset for corruption inside a shard).

use std::fmt;
use std::path::PathBuf;

pub use facekit_io::{FileError, LockError, WriteError};

/// An error of the dataset layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read: missing, not a regular file, over its budget, outside its folder.
    #[error(transparent)]
    File(#[from] FileError),
    /// A file could not be written.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// Another process writes (or reads) the dataset.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// A folder could not be listed, or a file removed.
    #[error("cannot {op} {}: {source}", .path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// Corruption inside a shard.
    #[error("shard {} is corrupt: {source}", .path.display())]
    Corrupt {
        /// The shard file.
        path: PathBuf,
        /// What is wrong, where.
        #[source]
        source: ShardError,
    },
    /// A manifest, label map or dataset that breaks the format (docs/FORMAT.md).
    #[error("{} {reason}", .path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// No dataset under that name.
    #[error("no dataset '{name}': {looked}")]
    NotFound {
        /// The name as typed.
        name: String,
        /// Where it was looked for.
        looked: String,
    },
    /// A record the format cannot store.
    #[error("{0}")]
    Unwritable(String),
}

/// The dataset layer's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn invalid(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Invalid { path: path.into(), reason: reason.into() }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }
}

/// Something wrong inside a shard, with the byte offset where it was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ShardError {
    /// Byte offset in the shard file where the problem is.
    pub offset: u64,
    /// The record number, when the problem belongs to one record.
    pub record: Option<u64>,
    /// What is wrong.
    pub reason: String,
}

impl ShardError {
    /// A corruption found at `offset`.
    pub fn corrupt(offset: u64, reason: impl Into<String>) -> Self {
        ShardError { offset, record: None, reason: reason.into() }
    }

    /// The same error, attributed to record `record`.
    pub(crate) fn in_record(mut self, record: u64) -> Self {
        self.record = Some(record);
        self
    }
}

impl fmt::Display for ShardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.record {
            Some(r) => write!(f, "record {r} at byte {}: {}", self.offset, self.reason),
            None => write!(f, "at byte {}: {}", self.offset, self.reason),
        }
    }
}
