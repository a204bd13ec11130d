//! Checkpoints `checkpoints/last/` and `checkpoints/best/`: weights (`model.safetensors`), the
//! optimiser's state (`optimizer.safetensors`: SGD momentum, or AdamW moments and step counts) and [`TrainState`] (`state.json`, with the fp16 loss scaler's
//! state). Tensors are stored NCHW-contiguous whatever their memory format during training.
//!
//! A checkpoint is a folder replaced as one step ([`facekit_io::durable::replace_dir`]), so a
//! reader never sees a half-written one; [`RunPaths::existing_checkpoint`] finds
//! it, or its predecessor when a crash hit the moment between the two renames.

use super::optim::Optimizer;
use super::state::TrainState;
use crate::run::paths::{RunPaths, MODEL_FILE, OPTIMIZER_FILE, STATE_FILE};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use tch::nn::VarStore;
use tch::Tensor;

/// Variables each rank holds only some rows of (Partial FC's class centres): checkpoints store
/// them whole, so that a checkpoint is one set of files whatever the number of ranks, and `eval`,
/// `embed`, `export` and a resume on another world size read it unchanged.
pub trait Shards {
    /// Whether variable `name` is sharded.
    fn holds(&self, name: &str) -> bool;
    /// The whole tensor from every rank's rows (a collective: every rank calls it).
    fn gather(&self, local: &Tensor) -> Result<Tensor>;
    /// This rank's rows of the whole tensor.
    fn take(&self, whole: &Tensor) -> Result<Tensor>;
}

/// Writes checkpoint `name` (`last` or `best`) of the run `run` when `writer` (rank 0); every
/// rank calls it when there are `shards` (their rows are gathered first).
pub fn write(
    run: &RunPaths,
    name: &str,
    vs: &VarStore,
    opt: &dyn Optimizer,
    state: &TrainState,
    shards: Option<&dyn Shards>,
    writer: bool,
) -> Result<PathBuf> {
    let target = run.checkpoint(name);
    let mut weights: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    weights.sort_by(|a, b| a.0.cmp(&b.0));
    let mut opt_state = opt.state();
    if let Some(sh) = shards {
        let params: std::collections::HashMap<String, Tensor> = vs.variables().into_iter().collect();
        for (n, t) in weights.iter_mut() {
            if sh.holds(n) {
                *t = sh.gather(t).with_context(|| format!("gathering the rows of {n} for the checkpoint"))?;
            }
        }
        for (key, t) in opt_state.iter_mut() {
            let param = opt.param_of(key);
            // Per-row state (momentum, moments) is gathered; a step count is the same everywhere.
            if sh.holds(param) && params.get(param).is_some_and(|p| p.size() == t.size()) {
                *t = sh
                    .gather(t)
                    .with_context(|| format!("gathering the rows of optimiser state {key} for the checkpoint"))?;
            }
        }
    }
    if !writer {
        return Ok(target);
    }
    facekit_io::durable::replace_dir(&target, |dir| -> Result<()> {
        super::layout::write_safetensors_contiguous(&weights, &dir.join(MODEL_FILE))?;
        super::layout::write_safetensors_contiguous(&opt_state, &dir.join(OPTIMIZER_FILE))?;
        facekit_io::durable::write(dir.join(STATE_FILE), &state.to_json()?)?;
        Ok(())
    })?;
    Ok(target)
}

/// Loads weights, optimiser state and trainer state from checkpoint folder `dir`; the variables
/// in `shards` take this rank's rows of the whole tensors the checkpoint holds.
pub fn load(dir: &Path, vs: &mut VarStore, opt: &mut dyn Optimizer, shards: Option<&dyn Shards>) -> Result<TrainState> {
    let state = TrainState::read(dir)?;
    let model = dir.join(MODEL_FILE);
    let opt_path = dir.join(OPTIMIZER_FILE);
    let Some(sh) = shards else {
        vs.load(&model).with_context(|| format!("cannot load weights {}", model.display()))?;
        opt.load(&opt_path)?;
        return Ok(state);
    };
    let saved: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(&model)
        .with_context(|| format!("cannot load weights {}", model.display()))?
        .into_iter()
        .collect();
    let params: std::collections::HashMap<String, Tensor> = vs.variables().into_iter().collect();
    for (name, var) in &params {
        let t = saved.get(name).with_context(|| format!("{}: no tensor '{name}'", model.display()))?;
        let t = if sh.holds(name) { sh.take(t)? } else { t.shallow_clone() };
        if t.size() != var.size() {
            bail!("{}: '{name}' has shape {:?}, the network {:?}", model.display(), t.size(), var.size());
        }
        let mut var = var.shallow_clone();
        tch::no_grad(|| var.copy_(&t));
    }
    let mut opt_state =
        Tensor::read_safetensors(&opt_path).with_context(|| format!("cannot read {}", opt_path.display()))?;
    for (key, t) in opt_state.iter_mut() {
        let param = opt.param_of(key).to_string();
        if sh.holds(&param) && t.dim() == 2 {
            *t = sh.take(t)?;
        }
    }
    opt.restore(opt_state, &opt_path)?;
    Ok(state)
}
