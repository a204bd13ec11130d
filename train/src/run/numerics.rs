//! How a run computes: its device, the autocast dtype (`--precision`) and the memory format of
//! images and convolution weights (`--memory-format`), and the forward pass under them.

use crate::model::{FaceNet, Outputs};
use crate::trainer::amp::{AmpDtype, Autocast};
use crate::trainer::config::{MemoryFormatKind, PrecisionKind};
use crate::trainer::layout::MemoryFormat;
use anyhow::Result;
use facekit_data::Batch;
use tch::{Device, Kind, Tensor};

/// Device, precision and memory format of a run, `auto` already resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Numerics {
    /// Where tensors live.
    pub device: Device,
    /// Autocast dtype of the network's trunk ([`FaceNet::embed_trunk`]); `None` is plain fp32.
    pub amp: Option<AmpDtype>,
    /// Layout of input batches and 4-d weights.
    pub memory_format: MemoryFormat,
}

impl Numerics {
    /// Resolves `--precision` and `--memory-format` for `device`.
    pub fn new(device: Device, precision: PrecisionKind, memory_format: MemoryFormatKind) -> Self {
        let cuda = device.is_cuda();
        let amp = match precision.resolve(cuda) {
            PrecisionKind::Fp16 => Some(AmpDtype::Fp16),
            PrecisionKind::Bf16 => Some(AmpDtype::Bf16),
            PrecisionKind::Fp32 | PrecisionKind::Auto => None,
        };
        let memory_format = match memory_format.resolve(cuda) {
            MemoryFormatKind::ChannelsLast => MemoryFormat::ChannelsLast,
            MemoryFormatKind::Contiguous | MemoryFormatKind::Auto => MemoryFormat::Contiguous,
        };
        Numerics { device, amp, memory_format }
    }

    /// Whether gradients need dynamic loss scaling (fp16 only: bf16 has fp32's exponent range).
    pub fn needs_loss_scaling(&self) -> bool {
        self.amp == Some(AmpDtype::Fp16)
    }

    /// For the start-of-run line and logs, e.g. `bf16 autocast, channels-last`.
    pub fn describe(&self) -> String {
        let p = match self.amp {
            None => "fp32",
            Some(AmpDtype::Fp16) => "fp16 autocast with loss scaling",
            Some(AmpDtype::Bf16) => "bf16 autocast",
        };
        let m = match self.memory_format {
            MemoryFormat::ChannelsLast => "channels-last",
            MemoryFormat::Contiguous => "contiguous",
        };
        format!("{p}, {m}")
    }

    /// A batch on the device, normalised, in this memory format, in fresh tensors: what the
    /// trainer's [`crate::trainer::feed`] gives in its fixed buffers (its tests compare the two).
    pub fn input(&self, batch: &Batch) -> Tensor {
        self.memory_format.apply(&batch_to_device(batch, self.device))
    }

    /// The network's outputs: the trunk under autocast (when mixed), then the embedding layers
    /// in fp32 and the gender/age heads outside autocast, so logits and losses are fp32.
    pub fn forward(&self, net: &FaceNet, xs: &Tensor, train: bool) -> Result<Outputs> {
        Ok(net.heads(self.embed(net, xs, train)?))
    }

    /// The fp32 embedding (not normalised) of `xs`: when mixed, the network's trunk under autocast
    /// and its embedding layers in fp32 ([`FaceNet::embed_trunk`], [`FaceNet::embed_tail`]).
    pub fn embed(&self, net: &FaceNet, xs: &Tensor, train: bool) -> Result<Tensor> {
        Ok(match self.amp {
            None => net.embed(xs, train),
            Some(dtype) => {
                let autocast = Autocast::new(self.device, Some(dtype))?;
                let ys = net.embed_trunk(xs, train);
                autocast.end()?;
                net.embed_tail(&ys.to_kind(Kind::Float), train)
            }
        })
    }

    /// Plain fp32 and contiguous on `device`: how `embed`, `eval` and `export` run a network.
    pub fn fp32(device: Device) -> Self {
        Numerics { device, amp: None, memory_format: MemoryFormat::Contiguous }
    }
}

/// A batch's u8 NHWC pixels as a normalised float NCHW tensor on `device`: `(x/255 - 0.5)/0.5`,
/// in fresh tensors. The trainer feeds batches through [`crate::trainer::feed`], into fixed
/// buffers; this is the definition its tests hold the feed to. The NCHW view of NHWC data already
/// has channels-last strides, which cuDNN prefers.
pub(crate) fn batch_to_device(batch: &facekit_data::Batch, device: Device) -> Tensor {
    let s = batch.size as i64;
    let host = Tensor::from_slice(&batch.images).view([batch.n as i64, s, s, 3]);
    let on_device = match device {
        // Pinned memory lets the copy run asynchronously with the previous step's kernels.
        Device::Cuda(_) => host.pin_memory(device).to_device_(device, Kind::Uint8, true, false),
        _ => host,
    };
    (on_device.to_kind(Kind::Float) / 127.5 - 1.0).permute([0, 3, 1, 2])
}
