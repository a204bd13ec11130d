//! Loading a trained network and computing L2-normalised embeddings in batches, on CPU or GPU,
//! optionally with insightface's flip test (embedding of image plus embedding of its mirror,
//! then normalised), through [`crate::embedding`]'s routine.

use crate::embedding::{embed_chips_as, Features, Scale};
use crate::events::{Event, FaceWork, Observer};
use crate::model::{FaceNet, NetConfig};
use crate::run::numerics::Numerics;
use crate::run::{net, paths};
use anyhow::{bail, Context, Result};
use facekit_io::StopFlag;
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use tch::nn::VarStore;
use tch::{Device, Tensor};

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

impl EmbedModel {
    /// Loads the network described by `model` (see [`paths::locate`], which tells `events` of a
    /// fallback) onto `device`.
    pub fn load(model: &Path, checkpoint: Option<&str>, device: Device, events: &Observer) -> Result<Self> {
        let (weights, net_json) = paths::locate(model, checkpoint, events)?;
        let net::Network { mut vs, net, config } = net::load(&weights, &net_json, device)?;
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
        self.features(pixels, n, Features { flip, scale: Scale::Unit })
    }

    /// [`EmbedModel::embed_pixels`] with the features `how` asks for (raw ones for IJB pooling).
    pub fn features(&self, pixels: &[u8], n: usize, how: Features) -> Result<Vec<f32>> {
        let s = self.image_size() as usize;
        if pixels.len() != n * s * s * 3 {
            bail!("{} bytes are not {n} RGB images of {s}x{s}", pixels.len());
        }
        embed_chips_as(&self.net, &self.numerics(), pixels, self.image_size(), n.max(1), how, &StopFlag::new())
            .with_context(|| format!("network {}", self.weights.display()))
    }
}

/// Embeds `n` images in batches of `batch_size`: `fill(i, buf)` writes image `i` as RGB8 HWC of
/// the network's size (called in parallel). Tells `events` how far it is ([`FaceWork::Embedding`]);
/// returns `n * dim` values, the features `how` asks for.
pub(crate) fn embed_all(
    model: &EmbedModel,
    n: usize,
    batch_size: usize,
    how: impl Into<Features>,
    events: &Observer,
    fill: impl Fn(usize, &mut [u8]) -> Result<()> + Sync,
) -> Result<Vec<f32>> {
    let s = model.image_size() as usize;
    let per = s * s * 3;
    let batch_size = batch_size.max(1);
    let how = how.into();
    let work = FaceWork::Embedding;
    events.emit(Event::FacesBegin { work, total: n as u64, done: 0 });
    let mut out = Vec::with_capacity(n * model.dim());
    let mut buf = vec![0u8; batch_size * per];
    for start in (0..n).step_by(batch_size) {
        let m = batch_size.min(n - start);
        buf[..m * per].par_chunks_mut(per).enumerate().try_for_each(|(k, chunk)| fill(start + k, chunk))?;
        out.extend(model.features(&buf[..m * per], m, how)?);
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
        let img = crate::embedding::resize(&images[i], size);
        buf.copy_from_slice(img.as_raw());
        Ok(())
    })
}
