//! Exporting a trained network for use without facekit: weights as safetensors and a TorchScript
//! module traced from the Rust model.
//!
//! Name mapping of `model.safetensors`: facekit's variable names are written unchanged. The
//! backbone's already are torchvision's `resnet50` names (`conv1.weight`, `bn1.running_mean`,
//! `layer1.0.downsample.0.weight`, ...; torchvision's `num_batches_tracked` and classifier `fc.*`
//! are absent); the embedding head is `embedding.{bn_in,fc,bn_out}.*` and the optional task heads
//! `gender_head.*`, `age_head.*`. ArcFace's class centres (`arcface.*`) are training-only and
//! left out.
//!
//! The TorchScript module maps a float32 NCHW batch of aligned faces of the network's input size,
//! normalised as `(x / 255 - 0.5) / 0.5`, to raw (not normalised) embeddings `[N, dim]`;
//! L2-normalise them before comparing with cosine similarity.

use super::embed::EmbedModel;
use anyhow::{Context, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};
use tch::{CModule, Kind, Tensor};

/// File names inside an export folder.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// TorchScript file inside an export folder.
pub const TORCHSCRIPT_FILE: &str = "model.torchscript.pt";

/// What was written.
#[derive(Debug, Clone, Serialize)]
pub struct ExportReport {
    /// The safetensors weights.
    pub weights: PathBuf,
    /// The TorchScript module.
    pub torchscript: PathBuf,
    /// The network configuration copied beside them.
    pub net_json: PathBuf,
    /// Number of tensors written.
    pub tensors: usize,
    /// Input side in pixels.
    pub image_size: i64,
    /// Embedding dimension.
    pub embedding_size: i64,
}

/// Writes `model.safetensors`, `model.torchscript.pt` and `net.json` into `out`; every file goes
/// through a temporary name and is renamed into place when complete.
pub fn export(model: &EmbedModel, out: &Path) -> Result<ExportReport> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut vars: Vec<(String, Tensor)> = model
        .vs
        .variables()
        .into_iter()
        .filter(|(name, _)| !name.starts_with("arcface."))
        .map(|(name, t)| (name, t.to_device(tch::Device::Cpu).to_kind(Kind::Float).contiguous()))
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let weights = out.join(WEIGHTS_FILE);
    let tmp = facekit_io::durable::temp_path(&weights);
    Tensor::write_safetensors(&vars, &tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    facekit_io::durable::commit_file(&tmp, &weights)?;

    let s = model.config.image_size;
    let example = Tensor::zeros([2, 3, s, s], (Kind::Float, model.device));
    let net = &model.net;
    let traced = tch::no_grad(|| {
        CModule::create_by_tracing("FaceNet", "forward", &[example], &mut |xs: &[Tensor]| vec![net.embed(&xs[0], false)])
    })
    .context("cannot trace the network")?;
    let torchscript = out.join(TORCHSCRIPT_FILE);
    let tmp = facekit_io::durable::temp_path(&torchscript);
    traced.save(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    facekit_io::durable::commit_file(&tmp, &torchscript)?;

    let net_json = out.join("net.json");
    facekit_io::durable::write_json(&net_json, &model.config)?;
    Ok(ExportReport {
        weights,
        torchscript,
        net_json,
        tensors: vars.len(),
        image_size: s,
        embedding_size: model.config.embedding_size,
    })
}

