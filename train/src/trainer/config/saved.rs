//! `config.json`: a run's configuration, the command lines that started and resumed it, and the
//! identity of the data it trains on.

use super::TrainConfig;
use crate::run::paths::RunPaths;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// `config.json`: the configuration plus the command line that produced it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedConfig {
    /// The command line that started the run, argument by argument.
    pub command_line: Vec<String>,
    /// The command lines of each `--resume` since, in order.
    #[serde(default)]
    pub resumed_with: Vec<Vec<String>>,
    /// facekit version that wrote it.
    pub tool_version: String,
    /// The settings.
    pub config: TrainConfig,
    /// The datasets the run was started on (or last resumed on), to notice repacked data.
    #[serde(default)]
    pub datasets: Vec<DatasetIdentity>,
}

/// What identifies a dataset's content: its manifest lists every shard's size and CRC32, so the
/// manifest's SHA-256 changes with any repack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetIdentity {
    /// `train` or `valid`.
    pub role: String,
    /// The dataset (`training/celeb`).
    pub dataset: String,
    /// SHA-256 of its manifest file.
    pub manifest_sha256: String,
    /// Its record count.
    pub records: u64,
}

impl DatasetIdentity {
    /// The identity of an open dataset.
    pub fn of(role: &str, ds: &facekit_shard::Dataset) -> Result<Self> {
        use sha2::{Digest, Sha256};
        let m = ds.paths().manifest();
        let bytes = facekit_io::bounded::read(&m, facekit_io::bounded::MANIFEST)?;
        Ok(DatasetIdentity {
            role: role.into(),
            dataset: ds.paths().dir().join(ds.paths().name()).display().to_string(),
            manifest_sha256: Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect(),
            records: ds.len() as u64,
        })
    }

    /// How `now` differs from `saved` (empty when they agree, or when `saved` is empty: a run
    /// from before datasets were recorded).
    pub fn changes(saved: &[DatasetIdentity], now: &[DatasetIdentity]) -> Vec<String> {
        if saved.is_empty() {
            return Vec::new();
        }
        if saved.len() != now.len() || saved.iter().zip(now).any(|(a, b)| a.role != b.role) {
            return vec![format!("{} dataset(s) then, {} now", saved.len(), now.len())];
        }
        saved
            .iter()
            .zip(now)
            .filter(|(a, b)| a.manifest_sha256 != b.manifest_sha256)
            .map(|(a, b)| {
                format!(
                    "{} set {} was repacked or changed ({} records then, {} now)",
                    a.role, b.dataset, a.records, b.records
                )
            })
            .collect()
    }
}

impl SavedConfig {
    /// Reads `config.json` of a run folder, written by this version or, with the flat
    /// configuration, by an earlier one ([`super::legacy`]).
    pub fn read(run: &RunPaths) -> Result<Self> {
        let path = run.config();
        let text = facekit_io::bounded::read(&path, facekit_io::bounded::STATE)?;
        let invalid = || format!("{} is not a valid facekit run configuration", path.display());
        let mut value: serde_json::Value = serde_json::from_slice(&text).with_context(invalid)?;
        if let Some(config) = value.get_mut("config").filter(|c| super::legacy::is_flat(c)) {
            *config = super::legacy::upgrade(config).with_context(invalid)?;
        }
        serde_json::from_value(value).with_context(invalid)
    }

    /// Writes `config.json` atomically.
    pub fn write(&self, run: &RunPaths) -> Result<()> {
        Ok(facekit_io::durable::write_json(run.config(), self)?)
    }
}
