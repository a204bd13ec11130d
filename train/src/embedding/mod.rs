//! Embedding face chips with a network, the same for training and for inference: the one
//! embedding routine ([`embed_chips`], with its typed [`EmbedError`]), the network's input
//! ([`to_input`]) and chip size ([`resize`]), pair distances, and insightface's verification
//! `.bin` files decoded for a network ([`bins`]), which `eval verify --bin` scores on a loaded
//! network and the trainer's `--eval-bin` on the network it trains.

pub mod bins;

use crate::model::FaceNet;
use crate::run::numerics::Numerics;
use anyhow::{bail, Context, Result};
use facekit_eval::metrics;
use facekit_io::StopFlag;
use image::imageops::FilterType;
use image::RgbImage;
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
    embed_chips_as(net, numerics, pixels, size, batch_size, Features { flip, scale: Scale::Unit }, stop)
}

/// Whether embeddings are L2-normalised before they are returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// Unit length (every verification protocol compares these).
    Unit,
    /// As the network gives them (after the flip sum): IJB's template pooling keeps the norm as a
    /// quality weight (insightface's `use_norm_score`).
    Raw,
}

/// What one image's feature is: with `flip`, the sum of the image's and its mirror's embeddings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    /// insightface's flip test.
    pub flip: bool,
    /// Normalised or raw.
    pub scale: Scale,
}

impl From<bool> for Features {
    /// Normalised features, with the flip test when `flip`.
    fn from(flip: bool) -> Self {
        Features { flip, scale: Scale::Unit }
    }
}

/// [`embed_chips`], returning the features `how` asks for (raw ones are checked for NaN and
/// infinity the same way).
pub fn embed_chips_as(
    net: &FaceNet,
    numerics: &Numerics,
    pixels: &[u8],
    size: u32,
    batch_size: usize,
    how: Features,
    stop: &StopFlag,
) -> Result<Vec<f32>> {
    let flip = how.flip;
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
        let e = match how.scale {
            Scale::Unit => {
                let norm = e.norm_scalaropt_dim(2, [1], true).clamp_min(1e-12);
                e / norm
            }
            Scale::Raw => e,
        };
        let e = e.to_kind(Kind::Float).to_device(Device::Cpu).contiguous();
        out.extend(Vec::<f32>::try_from(e.view([-1])).context("cannot copy embeddings from the device")?);
    }
    Ok(out)
}

/// RGB8 NHWC bytes as the normalised float NCHW input the networks take: `(x / 255 - 0.5) / 0.5`.
pub fn to_input(pixels: &[u8], n: usize, size: i64, device: Device) -> Tensor {
    let host = Tensor::from_slice(pixels).view([n as i64, size, size, 3]);
    (host.to_device(device).to_kind(Kind::Float) / 127.5 - 1.0).permute([0, 3, 1, 2]).contiguous()
}

/// Resizes to `size` x `size` with an antialiased triangle filter (PIL's BILINEAR resize), or
/// returns a copy when already that size.
pub fn resize(img: &RgbImage, size: u32) -> RgbImage {
    if img.width() == size && img.height() == size {
        img.clone()
    } else {
        image::imageops::resize(img, size, size, FilterType::Triangle)
    }
}

/// Squared L2 distances of the pairs `(a, b)` of rows of `emb` (`dim` columns).
pub(crate) fn pair_distances(emb: &[f32], dim: usize, pairs: &[(usize, usize)]) -> Vec<f64> {
    pairs
        .iter()
        .map(|&(a, b)| metrics::squared_l2(&emb[a * dim..(a + 1) * dim], &emb[b * dim..(b + 1) * dim]))
        .collect()
}
