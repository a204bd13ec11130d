//! `NAME.progress.json` of an import: enough to continue after a crash or a stop, and to refuse
//! continuing when the `.rec` changed or the file was damaged.

use super::import::ImportCounters;
use anyhow::{bail, Context, Result};
use facekit_shard::manifest::ShardInfo;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Value of the progress file's `format` field.
pub const IMPORT_PROGRESS_FORMAT: &str = "facekit-import-rec-progress-1";

/// What the import read, to notice a changed input on `--resume`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
}

/// A checkpoint, taken after every complete shard.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Progress {
    /// [`IMPORT_PROGRESS_FORMAT`].
    pub format: String,
    /// The input and settings it belongs to.
    pub source: Source,
    /// Entries consumed (imported or rejected) in the shards below.
    pub consumed: u64,
    /// Complete shards.
    pub shards: Vec<ShardInfo>,
    /// Counts so far.
    pub counters: ImportCounters,
    /// Length of `NAME.rejects.tsv.partial` at this checkpoint.
    pub rejects_bytes: u64,
    /// Set once every shard is complete: only the manifest, rejects list and report remain.
    #[serde(default)]
    pub finished: bool,
}

impl Progress {
    /// Writes the progress file atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        Ok(facekit_io::durable::write(path, &serde_json::to_vec(self)?)?)
    }

    /// Reads a progress file and checks that its numbers agree with each other and with `now`.
    pub fn read_for(path: &Path, now: &Source) -> Result<Self> {
        let text =
            facekit_io::bounded::read(path, facekit_io::bounded::STATE).context("cannot read the progress file")?;
        let p: Progress = serde_json::from_slice(&text)
            .with_context(|| format!("progress file {} is damaged; import again without --resume", path.display()))?;
        if p.format != IMPORT_PROGRESS_FORMAT {
            bail!("{} is not a progress file of `facekit import rec` ({})", path.display(), p.format);
        }
        if &p.source != now {
            bail!(
                "cannot resume: {} or the import settings changed since the import started; import again without --resume",
                now.rec
            );
        }
        let c = &p.counters;
        let in_shards: u64 = p.shards.iter().map(|s| s.records).sum();
        if p.consumed > p.source.entries
            || c.imported + c.rejected != p.consumed
            || in_shards != c.imported
            || (p.finished && p.consumed != p.source.entries)
        {
            bail!(
                "progress file {} cannot be trusted (its counts disagree: {} consumed of {}, {} imported, {} rejected, {} in shards); import again without --resume",
                path.display(),
                p.consumed,
                p.source.entries,
                c.imported,
                c.rejected,
                in_shards
            );
        }
        Ok(p)
    }
}
