//! The shard format: datasets of checksummed, indexed records (see `docs/FORMAT.md`).
//!
//! A dataset `training/celeb` is a manifest (`celeb.manifest.json`), a label map
//! (`celeb.labels.tsv`) and shards (`celeb-00000.shard`, ...). Writing and reading are separate
//! modules; `verify` checks every byte of a dataset.

pub mod codec;
pub mod format;
pub mod manifest;
pub mod reader;
pub mod record;
pub mod verify;
pub mod writer;

pub use format::{Encoding, Gender};
pub use manifest::{DatasetPaths, Manifest};
pub use reader::{Dataset, ShardReader};
pub use record::{Labels, Record};
pub use writer::{DatasetWriter, ShardWriter};

use std::fmt;

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
    pub fn in_record(mut self, record: u64) -> Self {
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
