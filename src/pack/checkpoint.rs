//! The progress file `<name>.progress.json` that makes `--resume` possible.
//!
//! It is rewritten atomically each time a training shard is completed, and holds how many input
//! files (in stream order) those shards account for, the counters and rejects up to that point, the
//! completed shards of both datasets, and the settings. Resuming re-checks every listed shard
//! (size and CRC32) and refuses when any setting differs, so a resumed pack is byte-identical to
//! an uninterrupted one. The file is removed once the manifest is written.

use super::report::Counters;
use crate::atomic::write_atomic;
use crate::shard::manifest::{DatasetPaths, ShardInfo};
use crate::shard::Encoding;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::Path;

/// Value of the progress file's `format` field.
pub const PROGRESS_FORMAT: &str = "facekit-pack-progress-2";

/// Everything that decides the bytes of the output. Threads are not here: they change nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// Input roots, canonicalised.
    pub roots: Vec<String>,
    /// Number of input files found when the pack started.
    pub files: u64,
    /// Number of identity classes.
    pub classes: u32,
    /// Face detector (`hog`, `cnn`).
    pub detector: String,
    /// Chip side in pixels.
    pub size: u32,
    /// Chip padding.
    pub padding: f64,
    /// Record encoding.
    pub encoding: Encoding,
    /// JPEG quality.
    pub quality: u8,
    /// JPEG chroma subsampling (`420`, `444`); empty in checkpoints from before the option.
    #[serde(default)]
    pub chroma: String,
    /// Target shard size in bytes.
    pub shard_size: u64,
    /// `--valid-fraction`.
    pub valid_fraction: f64,
    /// `--valid-per-class`.
    pub valid_per_class: usize,
    /// SHA-256 of the `--landmarks` file, if any.
    pub landmarks_sha256: Option<String>,
    /// SHA-256 of the `--attributes` file, if any.
    pub attributes_sha256: Option<String>,
    /// `--utkface-labels`.
    pub utkface_labels: bool,
    /// The facekit version.
    pub tool_version: String,
}

impl Settings {
    /// Names of the settings that differ between `self` and `other`.
    pub fn differences(&self, other: &Settings) -> Vec<String> {
        let (a, b) = (serde_json::to_value(self).unwrap_or_default(), serde_json::to_value(other).unwrap_or_default());
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                a.iter().filter(|(k, v)| b.get(*k) != Some(*v)).map(|(k, v)| format!("{k} (was {v}, now {})", b[k])).collect()
            }
            _ => vec!["(unreadable settings)".into()],
        }
    }
}

/// The saved state of an interrupted pack.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Always [`PROGRESS_FORMAT`].
    pub format: String,
    /// The settings the pack was started with.
    pub settings: Settings,
    /// Input files (in stream order) fully accounted for by the completed shards below.
    pub consumed: u64,
    /// Completed shards of the training dataset.
    pub train_shards: Vec<ShardInfo>,
    /// Completed shards of the validation dataset.
    pub valid_shards: Vec<ShardInfo>,
    /// Counters over the first `consumed` files.
    pub counters: Counters,
    /// Length in bytes of `<name>.rejects.tsv.partial` at this checkpoint: the header and the
    /// rejects among the first `consumed` files (see [`super::rejects`]).
    pub rejects_bytes: u64,
}

impl Checkpoint {
    /// Writes the progress file atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        write_atomic(path, &serde_json::to_vec(self)?)
    }

    /// Reads a progress file.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read(path).with_context(|| format!("cannot read progress file {}", path.display()))?;
        let damaged = || format!("progress file {} is damaged; pack again without --resume", path.display());
        // One parse: the format is checked first because an older facekit kept the rejects inside
        // this file, and its checkpoints cannot be continued.
        let value: serde_json::Value = serde_json::from_slice(&text).with_context(damaged)?;
        if let serde_json::Value::Object(o) = &value {
            match o.get("format").and_then(|f| f.as_str()) {
                Some(PROGRESS_FORMAT) => {}
                Some(f) if f.starts_with("facekit-pack-progress") => {
                    bail!("progress file {} was written by another facekit version ({f}); pack again without --resume", path.display())
                }
                _ => bail!("{} is not a facekit pack progress file", path.display()),
            }
        }
        let c: Checkpoint = serde_json::from_value(value).with_context(damaged)?;
        Ok(c)
    }
}

/// Checks that every shard listed as complete is on disk with the recorded size and CRC32.
pub fn check_shards(paths: &DatasetPaths, shards: &[ShardInfo]) -> Result<()> {
    for (n, info) in shards.iter().enumerate() {
        let p = paths.shard(n);
        if p.file_name().map(|f| f.to_string_lossy() != info.file).unwrap_or(true) {
            bail!("progress file lists shard {} as number {n}, expected {}", info.file, p.display());
        }
        let mut f = std::fs::File::open(&p).with_context(|| format!("completed shard {} is missing", p.display()))?;
        let mut crc = crc32fast::Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut len = 0u64;
        loop {
            let k = f.read(&mut buf).with_context(|| format!("cannot read {}", p.display()))?;
            if k == 0 {
                break;
            }
            crc.update(&buf[..k]);
            len += k as u64;
        }
        if len != info.bytes || crc.finalize() != info.crc32 {
            bail!("completed shard {} has changed since it was written (size or CRC32 differ)", p.display());
        }
    }
    Ok(())
}

/// Lowercase hex SHA-256 of a file, to notice a changed `--landmarks` or `--attributes` file.
pub fn file_sha256(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_files_of_other_versions_and_other_json_are_refused_with_the_reason() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("celeb.progress.json");
        std::fs::write(&p, br#"{"format": "facekit-pack-progress", "rejects": []}"#).unwrap();
        let err = format!("{:#}", Checkpoint::read(&p).unwrap_err());
        assert!(err.contains("another facekit version") && err.contains("without --resume"), "{err}");
        std::fs::write(&p, br#"{"format": "something-else"}"#).unwrap();
        let err = format!("{:#}", Checkpoint::read(&p).unwrap_err());
        assert!(err.contains("is not a facekit pack progress file"), "{err}");
        std::fs::write(&p, b"{\"format\": \"facekit-pack-progress-2\"").unwrap();
        let err = format!("{:#}", Checkpoint::read(&p).unwrap_err());
        assert!(err.contains("is damaged"), "{err}");
    }
}
