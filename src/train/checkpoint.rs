//! Checkpoints `checkpoints/last/` and `checkpoints/best/`: weights (`model.safetensors`), momentum
//! buffers (`optimizer.safetensors`) and [`TrainState`] (`state.json`, with the fp16 loss scaler's
//! state). Tensors are stored NCHW-contiguous whatever their memory format during training.
//!
//! A checkpoint is written into a hidden temporary folder, every file fsynced, and then renamed
//! into place, so a reader never sees a half-written checkpoint. Linux cannot atomically swap two
//! folders without `renameat2`, so the old one is first renamed aside (`.old-NAME`) and removed
//! after; [`checkpoint_dir`] falls back to it if a crash hit the moment between the two renames.

use super::optim::Sgd;
use super::state::TrainState;
use anyhow::{Context, Result};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use tch::nn::VarStore;

/// Weights file inside a checkpoint folder.
pub const MODEL_FILE: &str = "model.safetensors";
/// Momentum buffers file inside a checkpoint folder.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";

/// Writes checkpoint `name` (`last` or `best`) of the run in `run_dir`.
pub fn write(run_dir: &Path, name: &str, vs: &VarStore, opt: &Sgd, state: &TrainState) -> Result<PathBuf> {
    let root = run_dir.join("checkpoints");
    fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
    let tmp = root.join(format!(".tmp-{}-{name}", std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).with_context(|| format!("cannot remove {}", tmp.display()))?;
    }
    fs::create_dir(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let model = tmp.join(MODEL_FILE);
    save_weights(vs, &model)?;
    opt.save(&tmp.join(OPTIMIZER_FILE))?;
    fs::write(tmp.join("state.json"), state.to_json()?).with_context(|| format!("cannot write {}", tmp.display()))?;
    for f in [MODEL_FILE, OPTIMIZER_FILE, "state.json"] {
        let p = tmp.join(f);
        File::open(&p).and_then(|f| f.sync_all()).with_context(|| format!("cannot fsync {}", p.display()))?;
    }
    sync_dir(&tmp);
    let target = root.join(name);
    let old = root.join(format!(".old-{name}"));
    if old.exists() {
        fs::remove_dir_all(&old).with_context(|| format!("cannot remove {}", old.display()))?;
    }
    if target.exists() {
        fs::rename(&target, &old).with_context(|| format!("cannot move {} aside", target.display()))?;
    }
    fs::rename(&tmp, &target).with_context(|| format!("cannot rename {} to {}", tmp.display(), target.display()))?;
    sync_dir(&root);
    if old.exists() {
        fs::remove_dir_all(&old).with_context(|| format!("cannot remove {}", old.display()))?;
    }
    Ok(target)
}

/// The folder of checkpoint `name`, or its moved-aside predecessor after a crash mid-replace.
pub fn checkpoint_dir(run_dir: &Path, name: &str) -> Option<PathBuf> {
    let root = run_dir.join("checkpoints");
    [root.join(name), root.join(format!(".old-{name}"))].into_iter().find(|d| d.join("state.json").is_file())
}

/// Loads weights, momentum buffers and state from checkpoint folder `dir`.
pub fn load(dir: &Path, vs: &mut VarStore, opt: &mut Sgd) -> Result<TrainState> {
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

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}
