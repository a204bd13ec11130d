//! Loading a trained network and computing L2-normalised embeddings in batches, on CPU or GPU,
//! optionally with insightface's flip test (embedding of image plus embedding of its mirror,
//! then normalised).

use crate::events::{Event, FaceWork, Observer};
use crate::model::{FaceNet, NetConfig};
use crate::trainer::numerics::Numerics;
use crate::trainer::run_dir::RunPaths;
use anyhow::{bail, Context, Result};
use facekit_io::StopFlag;
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

/// Why [`embed_chips`] gave no embeddings, as a type, so that callers can tell a stop request and a
/// broken network from an I/O error (the trainer ends a run on either, differently).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmbedError {
    /// The caller's stop flag was set between two batches.
    #[error("stopped on request before every image was embedded")]
    Stopped,
    /// A batch's embeddings hold NaN or infinity: what no distance or threshold can use.
    #[error("the network's embeddings of {count} of the {batch} images of a batch are NaN or infinite")]
    NonFinite {
        /// Images of that batch whose embedding is not finite.
        count: usize,
        /// Images in the batch.
        batch: usize,
    },
}

/// Variables that do not feed the embedding: the task heads (their state cannot spoil an
/// embedding, so [`weights_problem`] does not blame them).
const NOT_EMBEDDING: [&str; 3] = ["gender_head.", "age_head.", "arcface."];

/// The first variable of `vs` that the embedding uses and that cannot give finite embeddings (a NaN
/// or infinite value, or a negative batch-norm running variance, whose square root is NaN),
/// described for an error message; `None` when every one is sound.
pub fn weights_problem(vs: &VarStore) -> Option<String> {
    let mut vars =
        vs.variables().into_iter().filter(|(n, _)| !NOT_EMBEDDING.iter().any(|p| n.starts_with(p))).collect::<Vec<_>>();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars.into_iter().find_map(|(name, t)| {
        let t = t.to_kind(Kind::Double);
        let bad = t.isfinite().logical_not().sum(Kind::Int64).int64_value(&[]);
        if bad > 0 {
            return Some(format!("`{name}` holds {bad} NaN or infinite value(s)"));
        }
        let negative = if name.ends_with("running_var") { t.lt(0.0).sum(Kind::Int64).int64_value(&[]) } else { 0 };
        (negative > 0).then(|| format!("`{name}` holds {negative} negative variance(s)"))
    })
}

/// A network ready for inference.
pub struct EmbedModel {
    /// Parameters (on `device`).
    pub vs: VarStore,
    /// The network.
    pub net: FaceNet,
    /// Its configuration (`net.json`).
    pub config: NetConfig,
    /// Where it runs.
    pub device: Device,
    /// The weights file it was loaded from.
    pub weights: PathBuf,
}

/// Where the weights and `net.json` of `model` are: a run folder (`Model/<run>`, checkpoint
/// `best` or `last`; `None`: `best`, or `last` with a note for a run trained without validation),
/// an export folder (`model.safetensors` + `net.json`), or a `.safetensors` file with `net.json`
/// beside it or in the run folder above it. `events` hears of a fallback to `last`
/// ([`Event::UsingLast`]).
pub fn locate(model: &Path, checkpoint: Option<&str>, events: &Observer) -> Result<(PathBuf, PathBuf)> {
    use crate::trainer::checkpoint::MODEL_FILE;
    use crate::trainer::run_dir::{BEST, LAST};
    let run = RunPaths::new(model);
    let weights = if model.is_file() {
        model.to_path_buf()
    } else if model.join(MODEL_FILE).is_file() {
        model.join(MODEL_FILE)
    } else if run.net().is_file() {
        let dir = match checkpoint {
            Some(name) => run.existing_checkpoint(name).with_context(|| {
                format!(
                    "run {} has no checkpoint `{name}` (expected {}/)",
                    model.display(),
                    run.checkpoint(name).display()
                )
            })?,
            None => match run.existing_checkpoint(BEST) {
                Some(d) => d,
                None => {
                    let last = run.existing_checkpoint(LAST).with_context(|| {
                        format!("run {} has no checkpoint yet (neither best nor last)", model.display())
                    })?;
                    events.emit(Event::UsingLast { run: model });
                    last
                }
            },
        };
        dir.join(MODEL_FILE)
    } else {
        bail!("{} is neither a run folder (with net.json), an export folder nor a .safetensors file", model.display());
    };
    let net_json = weights
        .ancestors()
        .skip(1)
        .take(4)
        .map(|d| RunPaths::new(d).net())
        .find(|p| p.is_file())
        .with_context(|| format!("no net.json next to {} or in the run folder above it", weights.display()))?;
    Ok((weights, net_json))
}

impl EmbedModel {
    /// Loads the network described by `model` (see [`locate`], which tells `events` of a
    /// fallback) onto `device`.
    pub fn load(model: &Path, checkpoint: Option<&str>, device: Device, events: &Observer) -> Result<Self> {
        let (weights, net_json) = locate(model, checkpoint, events)?;
        let text = facekit_io::bounded::read_string(&net_json, facekit_io::bounded::STATE)?;
        let config: NetConfig = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a network configuration", net_json.display()))?;
        let mut vs = VarStore::new(device);
        let net = FaceNet::new(&vs.root(), &config)
            .with_context(|| format!("bad network configuration in {}", net_json.display()))?;
        vs.load(&weights).with_context(|| {
            format!("cannot load weights {} for the network of {}", weights.display(), net_json.display())
        })?;
        if let Some(problem) = weights_problem(&vs) {
            bail!(
                "weights {}: {problem}, so no embedding it computes can be finite (did its training diverge?)",
                weights.display()
            );
        }
        // Inference only: no gradients, which also lets tracing embed the weights as constants.
        vs.freeze();
        Ok(EmbedModel { vs, net, config, device, weights })
    }

    /// Side of the square input the network expects.
    pub fn image_size(&self) -> u32 {
        self.config.image_size as u32
    }

    /// Embedding dimension.
    pub fn dim(&self) -> usize {
        self.config.embedding_size as usize
    }

    /// Raw (not normalised) embeddings of a normalised float NCHW batch, in inference mode.
    pub fn forward(&self, xs: &Tensor) -> Tensor {
        tch::no_grad(|| self.net.embed(xs, false))
    }

    /// How inference runs this network: fp32, contiguous, on its device.
    pub fn numerics(&self) -> Numerics {
        Numerics::fp32(self.device)
    }

    /// L2-normalised embeddings (`n * dim` values) of `n` RGB8 NHWC images of the network's size;
    /// with `flip`, the embeddings of each image and its mirror are summed before normalising.
    pub fn embed_pixels(&self, pixels: &[u8], n: usize, flip: bool) -> Result<Vec<f32>> {
        let s = self.image_size() as usize;
        if pixels.len() != n * s * s * 3 {
            bail!("{} bytes are not {n} RGB images of {s}x{s}", pixels.len());
        }
        embed_chips(&self.net, &self.numerics(), pixels, self.image_size(), n.max(1), flip, &StopFlag::new())
            .with_context(|| format!("network {}", self.weights.display()))
    }
}

/// L2-normalised embeddings (`n * dim` values, row by row) of the `n` RGB8 NHWC images of side
/// `size` that `pixels` holds one after another, computed by `net` in inference mode (batch norm's
/// running statistics, no dropout, no gradients), `batch_size` images per forward pass, in
/// `numerics`' device, precision and memory format. With `flip`, the embeddings of each image and
/// of its mirror are summed before normalising (insightface's flip test).
///
/// `stop` is read before each batch: once it is set the work ends with [`EmbedError::Stopped`],
/// so a stop request never waits for a whole verification set. A batch whose embeddings are not
/// all finite ends it with [`EmbedError::NonFinite`]: they would normalise to NaN and every
/// distance and accuracy computed from them would be meaningless.
///
/// The one embedding routine of `embed`, `eval verify` (on a loaded network, fp32) and of the
/// trainer's `--eval-bin` verification (on the network being trained, in the run's precision).
pub fn embed_chips(
    net: &FaceNet,
    numerics: &Numerics,
    pixels: &[u8],
    size: u32,
    batch_size: usize,
    flip: bool,
    stop: &StopFlag,
) -> Result<Vec<f32>> {
    let s = size as i64;
    let per = (s * s * 3) as usize;
    if !pixels.len().is_multiple_of(per) {
        bail!("{} bytes are not whole RGB images of {s}x{s}", pixels.len());
    }
    let dim = net.config().embedding_size as usize;
    let mut out = Vec::with_capacity(pixels.len() / per * dim);
    for chunk in pixels.chunks(batch_size.max(1) * per) {
        if stop.is_set() {
            return Err(EmbedError::Stopped.into());
        }
        let n = chunk.len() / per;
        let xs = numerics.memory_format.apply(&to_input(chunk, n, s, numerics.device));
        let e = tch::no_grad(|| -> Result<Tensor> {
            let mut e = numerics.embed(net, &xs, false)?;
            if flip {
                e = e + numerics.embed(net, &numerics.memory_format.apply(&xs.flip([3])), false)?;
            }
            Ok(e)
        })?;
        let count = e.isfinite().all_dim(1, false).logical_not().sum(Kind::Int64).int64_value(&[]) as usize;
        if count > 0 {
            return Err(EmbedError::NonFinite { count, batch: n }.into());
        }
        let norm = e.norm_scalaropt_dim(2, [1], true).clamp_min(1e-12);
        let e = (e / norm).to_kind(Kind::Float).to_device(Device::Cpu).contiguous();
        out.extend(Vec::<f32>::try_from(e.view([-1])).context("cannot copy embeddings from the device")?);
    }
    Ok(out)
}

/// RGB8 NHWC bytes as the normalised float NCHW input the networks take: `(x / 255 - 0.5) / 0.5`.
pub fn to_input(pixels: &[u8], n: usize, size: i64, device: Device) -> Tensor {
    let host = Tensor::from_slice(pixels).view([n as i64, size, size, 3]);
    (host.to_device(device).to_kind(Kind::Float) / 127.5 - 1.0).permute([0, 3, 1, 2]).contiguous()
}

/// Embeds `n` images in batches of `batch_size`: `fill(i, buf)` writes image `i` as RGB8 HWC of
/// the network's size (called in parallel). Tells `events` how far it is ([`FaceWork::Embedding`]);
/// returns `n * dim` values.
pub fn embed_all(
    model: &EmbedModel,
    n: usize,
    batch_size: usize,
    flip: bool,
    events: &Observer,
    fill: impl Fn(usize, &mut [u8]) -> Result<()> + Sync,
) -> Result<Vec<f32>> {
    let s = model.image_size() as usize;
    let per = s * s * 3;
    let batch_size = batch_size.max(1);
    let work = FaceWork::Embedding;
    events.emit(Event::FacesBegin { work, total: n as u64 });
    let mut out = Vec::with_capacity(n * model.dim());
    let mut buf = vec![0u8; batch_size * per];
    for start in (0..n).step_by(batch_size) {
        let m = batch_size.min(n - start);
        buf[..m * per].par_chunks_mut(per).enumerate().try_for_each(|(k, chunk)| fill(start + k, chunk))?;
        out.extend(model.embed_pixels(&buf[..m * per], m, flip)?);
        events.emit(Event::FacesDone { work, count: m as u64 });
    }
    events.emit(Event::FacesEnd { work });
    Ok(out)
}

/// Embeds every record of a dataset, in order (records decoded as the training loader does);
/// `events` hears how far it is.
pub fn embed_dataset(
    model: &EmbedModel,
    ds: &facekit_shard::Dataset,
    batch_size: usize,
    flip: bool,
    events: &Observer,
) -> Result<Vec<f32>> {
    let size = model.image_size();
    embed_all(model, ds.len(), batch_size, flip, events, |i, buf| {
        let rec = ds.record(i)?;
        facekit_data::RecordDecoder::new().decode_into(&rec, size, &facekit_data::View::IDENTITY, buf).with_context(
            || {
                format!(
                    "dataset {}: record {i} ({}) cannot be decoded",
                    ds.paths().name(),
                    String::from_utf8_lossy(rec.path)
                )
            },
        )
    })
    .with_context(|| format!("embedding dataset {}", ds.paths().name()))
}

/// Embeds in-memory images (resized to the network's size where needed); `events` hears how far
/// it is.
pub fn embed_images(
    model: &EmbedModel,
    images: &[image::RgbImage],
    batch_size: usize,
    flip: bool,
    events: &Observer,
) -> Result<Vec<f32>> {
    let size = model.image_size();
    embed_all(model, images.len(), batch_size, flip, events, |i, buf| {
        let img = super::faces::resize(&images[i], size);
        buf.copy_from_slice(img.as_raw());
        Ok(())
    })
}
