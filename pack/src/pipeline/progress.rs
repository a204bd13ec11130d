//! `NAME.progress.json`: the one checkpoint type of every pipeline, rewritten atomically after
//! each complete training shard, so that `--resume` continues from the last one.
//!
//! It holds what the input was (`input`: the source's settings and fingerprint, compared on
//! resume), how many items the complete shards account for, those shards (and the validation
//! dataset's), the source's counters, the length of the rejects list at that point, and, once
//! every shard is complete, the source's final mark (the pack's report, the import's `true`), so
//! that a run stopped in its last steps completes them on `--resume`.
//!
//! Progress files of facekit versions before this type named the fields after their tool
//! (`settings`/`source`, `train_shards`, `report`); they are read under those names too.

use crate::rejects;
use anyhow::{bail, Context, Result};
use facekit_shard::manifest::{DatasetPaths, ShardInfo};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::Path;

/// A checkpoint of a run reading `I`, counting in `C`, with final mark `F`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Progress<I, C, F> {
    /// The source's progress format (`facekit-pack-progress-3`, `facekit-import-rec-progress-1`).
    pub format: String,
    /// What the run reads and with which settings: a resume refuses any difference.
    #[serde(alias = "settings", alias = "source")]
    pub input: I,
    /// Items (in input order) fully accounted for by the shards below.
    pub consumed: u64,
    /// Complete shards of the (training) dataset.
    #[serde(alias = "train_shards")]
    pub shards: Vec<ShardInfo>,
    /// Complete shards of the validation dataset.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub valid_shards: Vec<ShardInfo>,
    /// The source's counters over the first `consumed` items.
    pub counters: C,
    /// Length in bytes of `NAME.rejects.tsv.partial` at this checkpoint (see [`crate::rejects`]).
    pub rejects_bytes: u64,
    /// Set in the final checkpoint, written once every shard is complete.
    #[serde(default, alias = "report")]
    pub finished: F,
}

/// The final mark of a progress file: unset until every shard is complete.
pub trait Final: Default + Clone + Serialize + DeserializeOwned {
    /// True in the final checkpoint.
    fn is_final(&self) -> bool;
}

impl Final for bool {
    fn is_final(&self) -> bool {
        *self
    }
}

impl<R: Clone + Serialize + DeserializeOwned> Final for Option<R> {
    fn is_final(&self) -> bool {
        self.is_some()
    }
}

impl<I: Serialize + DeserializeOwned, C: Serialize + DeserializeOwned, F: Final> Progress<I, C, F> {
    /// Writes the progress file atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        Ok(facekit_io::durable::write(path, &serde_json::to_vec(self)?)?)
    }

    /// Reads a progress file of `format`, written by `tool` (`pack`, `import`). An earlier
    /// format of the same tool is refused with the reason: its checkpoints cannot be continued.
    pub fn read(path: &Path, format: &str, tool: &str) -> Result<Self> {
        let text =
            facekit_io::bounded::read(path, facekit_io::bounded::STATE).context("cannot read the progress file")?;
        let damaged = || format!("progress file {} is damaged; {tool} again without --resume", path.display());
        let value: serde_json::Value = serde_json::from_slice(&text).with_context(damaged)?;
        let family = format.trim_end_matches(|c: char| c.is_ascii_digit() || c == '-');
        match value.get("format").and_then(|f| f.as_str()) {
            Some(f) if f == format => {}
            Some(f) if f.starts_with(family) => bail!(
                "progress file {} was written by another facekit version ({f}); {tool} again without --resume",
                path.display()
            ),
            _ => bail!("{} is not a facekit {tool} progress file", path.display()),
        }
        serde_json::from_value(value).with_context(damaged)
    }

    /// Checks what every progress file must satisfy: the counts are the source's to check
    /// (`check` of [`super::Source`]), the rejects list at least its header.
    pub(crate) fn check_rejects(&self) -> Result<()> {
        if self.rejects_bytes < rejects::HEADER.len() as u64 {
            bail!("it records a rejects list of {} bytes, shorter than its header", self.rejects_bytes);
        }
        Ok(())
    }
}

/// Checks that every shard listed as complete is on disk with the recorded size and CRC32.
pub fn check_shards(paths: &DatasetPaths, shards: &[ShardInfo]) -> Result<()> {
    for (n, info) in shards.iter().enumerate() {
        let p = paths.shard(n);
        if p.file_name().map(|f| f.to_string_lossy() != info.file).unwrap_or(true) {
            bail!("progress file lists shard {} as number {n}, expected {}", info.file, p.display());
        }
        let mut f = facekit_io::bounded::open_regular(&p)
            .with_context(|| format!("completed shard {} is missing", p.display()))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(n: u64) -> ShardInfo {
        ShardInfo { file: format!("ds-{n:05}.shard"), records: n, bytes: 100 + n, crc32: n as u32 }
    }

    #[test]
    fn progress_files_in_the_shapes_of_earlier_versions_still_resume() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("ds.progress.json");
        // The pack's progress file before the pipeline: `settings`, `train_shards`, `report`.
        let pack = serde_json::json!({
            "format": "facekit-pack-progress-3", "settings": "same input", "consumed": 7,
            "train_shards": [shard(3)], "valid_shards": [shard(1)], "counters": 7, "rejects_bytes": 20,
            "report": "the report"
        });
        std::fs::write(&p, serde_json::to_vec(&pack).unwrap()).unwrap();
        let read = Progress::<String, u64, Option<String>>::read(&p, "facekit-pack-progress-3", "pack").unwrap();
        assert_eq!((read.input.as_str(), read.consumed, read.counters), ("same input", 7, 7));
        assert_eq!((read.shards, read.valid_shards), (vec![shard(3)], vec![shard(1)]));
        assert_eq!(read.finished.as_deref(), Some("the report"));
        // The import's: `source`, `shards`, `finished: bool`, no validation shards.
        let import = serde_json::json!({
            "format": "facekit-import-rec-progress-1", "source": "a.rec", "consumed": 4,
            "shards": [shard(4)], "counters": 4, "rejects_bytes": 20, "finished": true
        });
        std::fs::write(&p, serde_json::to_vec(&import).unwrap()).unwrap();
        let read = Progress::<String, u64, bool>::read(&p, "facekit-import-rec-progress-1", "import").unwrap();
        assert_eq!((read.input.as_str(), &read.shards, read.finished), ("a.rec", &vec![shard(4)], true));
        assert!(read.valid_shards.is_empty());
        // And what is written now reads back the same.
        read.write(&p).unwrap();
        let again = Progress::<String, u64, bool>::read(&p, "facekit-import-rec-progress-1", "import").unwrap();
        assert_eq!((again.consumed, again.shards, again.finished), (4, vec![shard(4)], true));
    }
}
