//! Checkpoints `checkpoints/last/` and `checkpoints/best/`: weights (`model.safetensors`), the
//! optimiser's state (`optimizer.safetensors`: SGD momentum, or AdamW moments and step counts) and [`TrainState`] (`state.json`, with the fp16 loss scaler's
//! state). Tensors are stored NCHW-contiguous whatever their memory format during training.
//!
//! A checkpoint is a folder replaced as one step ([`facekit_io::durable::replace_dir`]), so a
//! reader never sees a half-written one; [`super::run_dir::RunPaths::existing_checkpoint`] finds
//! it, or its predecessor when a crash hit the moment between the two renames.

use super::optim::Optimizer;
use super::run_dir::RunPaths;
use super::state::TrainState;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use tch::nn::VarStore;

/// Weights file inside a checkpoint folder.
pub const MODEL_FILE: &str = "model.safetensors";
/// Optimiser state file inside a checkpoint folder.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// The trainer's state inside a checkpoint folder.
pub const STATE_FILE: &str = "state.json";

/// Writes checkpoint `name` (`last` or `best`) of the run `run`.
pub fn write(run: &RunPaths, name: &str, vs: &VarStore, opt: &dyn Optimizer, state: &TrainState) -> Result<PathBuf> {
    let target = run.checkpoint(name);
    facekit_io::durable::replace_dir(&target, |dir| -> Result<()> {
        save_weights(vs, &dir.join(MODEL_FILE))?;
        opt.save(&dir.join(OPTIMIZER_FILE))?;
        facekit_io::durable::write(dir.join(STATE_FILE), &state.to_json()?)?;
        Ok(())
    })?;
    Ok(target)
}

/// Loads weights, optimiser state and trainer state from checkpoint folder `dir`.
pub fn load(dir: &Path, vs: &mut VarStore, opt: &mut dyn Optimizer) -> Result<TrainState> {
    let state = TrainState::read(dir)?;
    let model = dir.join(MODEL_FILE);
    vs.load(&model).with_context(|| format!("cannot load weights {}", model.display()))?;
    opt.load(&dir.join(OPTIMIZER_FILE))?;
    Ok(state)
}

/// Writes every variable of `vs` to `path` as standard contiguous tensors, so that a
/// channels-last run's checkpoint holds the same bytes as a contiguous run's and loads anywhere.
pub fn save_weights(vs: &VarStore, path: &Path) -> Result<()> {
    let mut named: Vec<(String, tch::Tensor)> = vs.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    super::layout::write_safetensors_contiguous(&named, path)
}
