//! What a pack's progress file (the pipeline's [`Progress`]) holds besides the counts: the
//! [`Settings`] that decide the output's bytes, among them the [`InputFingerprint`] of the input
//! files. Resuming re-checks every listed shard (size and CRC32) and refuses when any setting
//! differs, so a resumed pack is byte-identical to an uninterrupted one.

use super::inputs::InputFile;
use super::pipeline::Progress;
use super::report::{Counters, PackReport};
use anyhow::{bail, Result};
use facekit_shard::Encoding;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Value of the progress file's `format` field.
pub(crate) const PROGRESS_FORMAT: &str = "facekit-pack-progress-3";

/// Everything that decides the bytes of the output. Threads are not here: they change nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// Input roots, canonicalised.
    pub roots: Vec<String>,
    /// Number of input files found when the pack started.
    pub files: u64,
    /// SHA-256 over every input file's record path, class, size and modification time, in
    /// stream order ([`InputFingerprint`]): a file moved to another identity folder, added,
    /// removed or rewritten changes it.
    pub input_sha256: String,
    /// Number of identity classes.
    pub classes: u32,
    /// Face detector (`hog`, `cnn`).
    pub detector: String,
    /// Alignment of detected faces (`dlib`, `arcface`); checkpoints from before the option were `dlib`.
    #[serde(default = "dlib_alignment")]
    pub alignment: String,
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
    /// `--part K/N`, if the pack is one part of a split input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<String>,
    /// The facekit version.
    pub tool_version: String,
}

fn dlib_alignment() -> String {
    crate::align::Alignment::Dlib.name().into()
}

impl Settings {
    /// Names of the settings that differ between `self` and `other`.
    pub fn differences(&self, other: &Settings) -> Vec<String> {
        let (a, b) = (serde_json::to_value(self).unwrap_or_default(), serde_json::to_value(other).unwrap_or_default());
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => a
                .iter()
                .filter(|(k, v)| b.get(*k) != Some(*v))
                .map(|(k, v)| match k.as_str() {
                    "input_sha256" => {
                        "the input files (names, identity folders, sizes or modification times)".to_string()
                    }
                    _ => format!("{k} (was {v}, now {})", b.get(k).unwrap_or(&serde_json::Value::Null)),
                })
                .collect(),
            _ => vec!["(unreadable settings)".into()],
        }
    }
}

/// The saved state of an interrupted pack: the pipeline's progress file with the pack's settings,
/// counters, and, in the final checkpoint, its report.
pub type Checkpoint = Progress<Settings, Counters, Option<PackReport>>;

/// Checks that a pack checkpoint's numbers agree with each other, so that a damaged or edited
/// progress file is refused instead of obeyed (a `consumed` beyond the input would skip files
/// unseen).
pub fn check_consistent(cp: &Checkpoint) -> Result<()> {
    let c = &cp.counters;
    if cp.consumed > cp.input.files {
        bail!("it says {} files were consumed of the {} the pack started with", cp.consumed, cp.input.files);
    }
    if c.seen != cp.consumed || c.packed + c.rejected != c.seen || c.packed_valid > c.packed {
        bail!(
            "its counts disagree: {} files consumed, {} seen = {} packed + {} rejected",
            cp.consumed,
            c.seen,
            c.packed,
            c.rejected
        );
    }
    let train: u64 = cp.shards.iter().map(|s| s.records).sum();
    let valid: u64 = cp.valid_shards.iter().map(|s| s.records).sum();
    // A checkpoint is taken right after shards close, so they hold exactly what was counted.
    if train != c.packed - c.packed_valid || valid != c.packed_valid {
        bail!(
            "its shards hold {train} training and {valid} validation records, but it counted {} and {}",
            c.packed - c.packed_valid,
            c.packed_valid
        );
    }
    cp.check_rejects()?;
    if let Some(r) = &cp.finished {
        if cp.consumed != cp.input.files || r.counters != *c || train + valid != c.packed {
            bail!("its final report disagrees with its counts");
        }
    }
    Ok(())
}

/// A running SHA-256 over the input stream's identity: what the pack packs, in what order, under
/// which labels.
pub(crate) struct InputFingerprint(sha2::Sha256);

impl Default for InputFingerprint {
    fn default() -> Self {
        Self::new()
    }
}

impl InputFingerprint {
    /// An empty fingerprint.
    pub fn new() -> Self {
        use sha2::Digest;
        InputFingerprint(sha2::Sha256::new())
    }

    /// Adds the next input file: its record path, class, and (when it can be seen) size and
    /// modification time.
    pub fn add(&mut self, f: &InputFile) {
        use sha2::Digest;
        let (len, mtime) = std::fs::metadata(&f.file)
            .map(|m| {
                (
                    m.len(),
                    m.modified()
                        .ok()
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map_or(0, |d| d.as_nanos()),
                )
            })
            .unwrap_or((u64::MAX, 0));
        self.0.update((f.record_path.len() as u64).to_le_bytes());
        self.0.update(f.record_path.as_bytes());
        self.0.update(f.class.map_or(u64::MAX, u64::from).to_le_bytes());
        self.0.update(len.to_le_bytes());
        self.0.update(mtime.to_le_bytes());
    }

    /// The hex digest.
    pub fn finish(self) -> String {
        use sha2::Digest;
        self.0.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Lowercase hex SHA-256 of a file, to notice a changed `--landmarks` or `--attributes` file.
pub(crate) fn file_sha256(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let bytes = facekit_io::bounded::read(path, facekit_io::bounded::TABLE)?;
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
        let err = format!("{:#}", Checkpoint::read(&p, PROGRESS_FORMAT, "pack").unwrap_err());
        assert!(err.contains("another facekit version") && err.contains("without --resume"), "{err}");
        std::fs::write(&p, br#"{"format": "something-else"}"#).unwrap();
        let err = format!("{:#}", Checkpoint::read(&p, PROGRESS_FORMAT, "pack").unwrap_err());
        assert!(err.contains("is not a facekit pack progress file"), "{err}");
        std::fs::write(&p, b"{\"format\": \"facekit-pack-progress-2\"").unwrap();
        let err = format!("{:#}", Checkpoint::read(&p, PROGRESS_FORMAT, "pack").unwrap_err());
        assert!(err.contains("is damaged"), "{err}");
    }
}
