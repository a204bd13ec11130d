//! `state.json` of a checkpoint: where the run stands (step, epoch, batch, learning rate,
//! schedule state, best metric), everything besides tensors that an exact resume needs.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Position and bookkeeping of a run, saved beside its weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Steps completed.
    pub step: u64,
    /// Current epoch (pass over the training sets), from 0.
    pub epoch: u64,
    /// Batches of `epoch` already consumed; the next step uses batch number `batch_in_epoch`.
    pub batch_in_epoch: u64,
    /// Learning rate used by the last step.
    pub lr: f64,
    /// The schedule's own state (dlib loss history for plateau), as its serde value.
    pub schedule: serde_json::Value,
    /// The run's seed; torch's generator is reseeded from it and the step number at every step,
    /// so restoring the step restores the random stream.
    pub seed: u64,
    /// Best validation metric so far.
    pub best: Option<BestMetric>,
    /// Images trained on so far.
    pub images_seen: u64,
    /// Corrupt records skipped so far (with `--skip-corrupt`).
    pub skipped_corrupt: u64,
    /// Seconds spent training so far, across resumes.
    pub train_seconds: f64,
    /// fp16 loss scaler's state; absent for fp32 and bf16 runs (and in older checkpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaler: Option<ScalerState>,
}

/// What a checkpoint keeps of the scaler (in `state.json`), so a resumed fp16 run continues with
/// the same scale and growth count as the uninterrupted one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScalerState {
    /// Current loss scale (a power of two times `init_scale`, exact in JSON).
    pub scale: f64,
    /// Clean steps in a row since the last change of scale.
    pub growth_tracker: i64,
    /// Optimiser steps skipped so far because of inf/NaN gradients.
    pub skipped_steps: u64,
}

impl ScalerState {
    /// The state from [`super::scaler::GradScaler::state_tensor`]'s values (scale, growth tracker,
    /// skipped steps); zeros where values are missing.
    pub fn from_values(v: &[f64]) -> Self {
        let at = |i: usize| v.get(i).copied().unwrap_or(0.0);
        ScalerState { scale: at(0), growth_tracker: at(1) as i64, skipped_steps: at(2) as u64 }
    }
}

/// The best validation result so far and where it was reached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BestMetric {
    /// Metric name, e.g. `identity_accuracy` or `age_mae`.
    pub name: String,
    /// Its value.
    pub value: f64,
    /// True when larger is better.
    pub higher_is_better: bool,
    /// The step it was measured at.
    pub step: u64,
}

impl BestMetric {
    /// True when `value` beats this best.
    pub(crate) fn is_beaten_by(&self, value: f64) -> bool {
        if self.higher_is_better {
            value > self.value
        } else {
            value < self.value
        }
    }
}

impl TrainState {
    /// The state of a run before its first step.
    pub fn start(cfg: &super::config::TrainConfig) -> Self {
        TrainState {
            step: 0,
            epoch: 0,
            batch_in_epoch: 0,
            lr: cfg.lr,
            schedule: serde_json::Value::Null,
            seed: cfg.seed,
            best: None,
            images_seen: 0,
            skipped_corrupt: 0,
            train_seconds: 0.0,
            scaler: None,
        }
    }

    /// Reads `state.json` from a checkpoint folder.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(crate::run::paths::STATE_FILE);
        let text = facekit_io::bounded::read(&path, facekit_io::bounded::STATE)?;
        serde_json::from_slice(&text).with_context(|| format!("{} is not a valid training state", path.display()))
    }

    /// The JSON text of this state.
    pub(crate) fn to_json(&self) -> Result<Vec<u8>> {
        let mut text = serde_json::to_vec_pretty(self)?;
        text.push(b'\n');
        Ok(text)
    }
}
