//! Memory format of images and convolution weights: NCHW-contiguous or channels-last (NHWC strides
//! behind the same NCHW shape).
//!
//! cuDNN's fastest convolutions, tensor-core ones in fp16/bf16 above all, work on NHWC data; with
//! NCHW tensors it inserts a transpose before and after each convolution. Channels-last changes
//! strides only: shapes, names and values, hence every result and every checkpoint, stay the same.

use anyhow::{Context, Result};
use std::path::Path;
use tch::nn::VarStore;
use tch::Tensor;

/// How 4-d tensors are laid out in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryFormat {
    /// Standard NCHW strides.
    Contiguous,
    /// NHWC strides for an NCHW-shaped tensor (PyTorch's `torch.channels_last`).
    ChannelsLast,
}

impl MemoryFormat {
    /// `t` in this format (4-d tensors only; others are returned as they are). No copy when `t`
    /// already has it.
    pub fn apply(self, t: &Tensor) -> Tensor {
        match (self, t.dim()) {
            (MemoryFormat::ChannelsLast, 4) => to_channels_last(t),
            (MemoryFormat::Contiguous, 4) => t.contiguous(),
            _ => t.shallow_clone(),
        }
    }

    /// Gives every 4-d variable of `vs` (the convolution weights) this format, in place: the
    /// variables keep their identity, so optimisers holding them see the new layout.
    pub fn apply_to_vars(self, vs: &VarStore) {
        tch::no_grad(|| {
            for (_, mut var) in vs.variables() {
                if var.dim() == 4 {
                    let data = self.apply(&var);
                    // set_data swaps the storage and strides of the variable itself (shared by
                    // every handle to it), keeping requires_grad.
                    var.set_data(&data);
                }
            }
        });
    }
}

/// `t` [N, C, H, W] with channels-last strides: the NHWC permutation made contiguous, viewed
/// back as NCHW.
pub fn to_channels_last(t: &Tensor) -> Tensor {
    t.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}

/// Whether `t` is a 4-d tensor with dense channels-last strides (C fastest, then W, H, N).
pub fn is_channels_last(t: &Tensor) -> bool {
    if t.dim() != 4 {
        return false;
    }
    let (size, stride) = (t.size(), t.stride());
    let (n, c, h, w) = (size[0], size[1], size[2], size[3]);
    // A stride is free where its dimension has size 1 (PyTorch accepts any value there).
    let ok = |dim: usize, expected: i64, len: i64| len == 1 || stride[dim] == expected;
    ok(1, 1, c) && ok(3, c, w) && ok(2, c * w, h) && ok(0, c * w * h, n)
}

/// Writes `named` tensors as safetensors, each as a standard contiguous copy where it is not:
/// safetensors stores row-major NCHW bytes, and a channels-last tensor's memory is not that.
pub(crate) fn write_safetensors_contiguous(named: &[(String, Tensor)], path: &Path) -> Result<()> {
    let dense: Vec<(&str, Tensor)> = named.iter().map(|(n, t)| (n.as_str(), t.contiguous())).collect();
    Tensor::write_safetensors(&dense, path).with_context(|| format!("cannot write {}", path.display()))
}
