//! What an import's `NAME.progress.json` (the pipeline's [`crate::pipeline::Progress`]) holds
//! besides the counts: the `.rec`'s fingerprint and the settings, to refuse continuing when the
//! `.rec` changed or the file was damaged.

use super::import::ImportCounters;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Value of the progress file's `format` field.
pub(crate) const IMPORT_PROGRESS_FORMAT: &str = "facekit-import-rec-progress-1";

/// What the import read, to notice a changed input on `--resume`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Source {
    /// The `.rec`, canonical.
    pub rec: String,
    /// Its size in bytes.
    pub rec_bytes: u64,
    /// Its modification time (ns since the epoch).
    pub rec_mtime_ns: u128,
    /// SHA-256 of the `.idx`, when there is one.
    pub idx_sha256: Option<String>,
    /// SHA-256 of `property`, when there is one.
    pub property_sha256: Option<String>,
    /// Image records to import.
    pub entries: u64,
    /// Target shard size.
    pub shard_size: u64,
    /// `--valid-fraction` (absent from progress files of imports without a split, as before it
    /// existed).
    #[serde(default, skip_serializing_if = "no_split")]
    pub valid_fraction: f64,
    /// SHA-256 of the `--names` file, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub names_sha256: Option<String>,
    /// `--part K/N` and its range of image records (`entries` then counts the part's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<String>,
}

fn no_split(fraction: &f64) -> bool {
    *fraction == 0.0
}

/// An import's checkpoint: the pipeline's progress file with the `.rec`'s fingerprint and the
/// import's counters, `finished` once every shard is complete.
pub type Progress = crate::pipeline::Progress<Source, ImportCounters, bool>;

/// Refuses a checkpoint of another `.rec` or other settings, or whose numbers disagree.
pub fn check(p: &Progress, path: &Path, now: &Source) -> Result<()> {
    if &p.input != now {
        bail!(
            "cannot resume: {} or the import settings changed since the import started; import again without --resume",
            now.rec
        );
    }
    let c = &p.counters;
    let in_shards: u64 = p.shards.iter().map(|s| s.records).sum();
    let in_valid: u64 = p.valid_shards.iter().map(|s| s.records).sum();
    if p.consumed > p.input.entries
        || c.imported + c.rejected != p.consumed
        || in_shards + in_valid != c.imported
        || in_valid != c.imported_valid.unwrap_or(0)
        || (p.finished && p.consumed != p.input.entries)
    {
        bail!(
            "progress file {} cannot be trusted (its counts disagree: {} consumed of {}, {} imported, {} held out, {} rejected, {} in shards, {} in validation shards); import again without --resume",
            path.display(),
            p.consumed,
            p.input.entries,
            c.imported,
            c.imported_valid.unwrap_or(0),
            c.rejected,
            in_shards,
            in_valid
        );
    }
    p.check_rejects()
}
