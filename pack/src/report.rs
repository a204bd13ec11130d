//! What a pack did: counters, `<name>.report.json` and the printed summary (the rejected files
//! themselves go to `<name>.rejects.tsv` as they happen, see [`super::rejects`]).
//!
//! Every input file is counted exactly once, as packed or rejected: `seen == packed + rejected`.

use crate::reason::RejectReason;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// One rejected input file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reject {
    /// The file's path on disk.
    pub path: String,
    /// Why.
    pub reason: RejectReason,
    /// Human-readable detail.
    pub detail: String,
}

/// Counts for one source.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceCounts {
    /// Source name.
    pub name: String,
    /// Files seen.
    pub seen: u64,
    /// Records written to the training dataset.
    pub packed_train: u64,
    /// Records written to the validation dataset.
    pub packed_valid: u64,
    /// Files rejected.
    pub rejected: u64,
}

/// Running totals of a pack (saved in the progress file, so a resumed pack reports the whole job).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Input files seen.
    pub seen: u64,
    /// Records written (both datasets).
    pub packed: u64,
    /// Records written to the validation dataset.
    pub packed_valid: u64,
    /// Files rejected.
    pub rejected: u64,
    /// Rejections by reason code.
    pub rejected_by_reason: BTreeMap<String, u64>,
    /// Images in which the detector found more than one face (the largest was packed).
    pub multiple_faces: u64,
    /// Images whose face was found only after upsampling.
    pub upsampled: u64,
    /// Images aligned from `--landmarks` instead of detection.
    pub from_landmarks: u64,
    /// Packed images that got a gender or age label.
    pub with_attributes: u64,
    /// Per source, in source order.
    pub per_source: Vec<SourceCounts>,
}

impl Counters {
    /// Zero counts for these sources.
    pub fn new(source_names: impl IntoIterator<Item = String>) -> Self {
        Counters {
            per_source: source_names.into_iter().map(|name| SourceCounts { name, ..Default::default() }).collect(),
            ..Default::default()
        }
    }

    /// Counts one rejected file of `source`.
    pub fn reject(&mut self, source: u16, reason: RejectReason) {
        self.seen += 1;
        self.rejected += 1;
        *self.rejected_by_reason.entry(reason.code().to_string()).or_default() += 1;
        if let Some(s) = self.per_source.get_mut(source as usize) {
            s.seen += 1;
            s.rejected += 1;
        }
    }

    /// Counts one packed file of `source`.
    pub fn pack(&mut self, source: u16, valid: bool) {
        self.seen += 1;
        self.packed += 1;
        if valid {
            self.packed_valid += 1;
        }
        if let Some(s) = self.per_source.get_mut(source as usize) {
            s.seen += 1;
            if valid {
                s.packed_valid += 1;
            } else {
                s.packed_train += 1;
            }
        }
    }
}

/// The content of `<name>.report.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PackReport {
    /// The training dataset (`folder/name`).
    pub dataset: String,
    /// The validation dataset, when a split was asked for.
    pub valid_dataset: Option<String>,
    /// All counts.
    #[serde(flatten)]
    pub counters: Counters,
    /// Files processed by this run (fewer than `seen` after `--resume`).
    pub processed_this_run: u64,
    /// Wall-clock seconds of this run.
    pub elapsed_s: f64,
    /// Files processed per second by this run.
    pub images_per_s: f64,
    /// Worker threads used.
    pub threads: usize,
    /// Whether this run continued an interrupted one.
    pub resumed: bool,
}

impl PackReport {
    /// Writes the report as pretty JSON, atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        Ok(facekit_io::durable::write_json(path, self)?)
    }

    /// The summary printed at the end of a pack.
    pub fn summary(&self) -> String {
        let c = &self.counters;
        let mut s = format!(
            "packed {} of {} files into {} ({} train, {} valid), rejected {}; {} with several faces, {} upsampled, {} from landmarks\n",
            c.packed,
            c.seen,
            self.dataset,
            c.packed - c.packed_valid,
            c.packed_valid,
            c.rejected,
            c.multiple_faces,
            c.upsampled,
            c.from_landmarks
        );
        for (reason, n) in &c.rejected_by_reason {
            s.push_str(&format!("  rejected {reason}: {n}\n"));
        }
        if c.per_source.len() > 1 {
            for src in &c.per_source {
                s.push_str(&format!(
                    "  source {}: {} seen, {} packed, {} rejected\n",
                    src.name,
                    src.seen,
                    src.packed_train + src.packed_valid,
                    src.rejected
                ));
            }
        }
        s.push_str(&format!(
            "{:.1} s, {:.1} images/s on {} thread(s){}",
            self.elapsed_s,
            self.images_per_s,
            self.threads,
            if self.resumed { " (resumed)" } else { "" }
        ));
        s
    }
}
