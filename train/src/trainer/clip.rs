//! Gradient clipping by global norm, `torch.nn.utils.clip_grad_norm_`'s formula, on the device.
//!
//! arcface_torch clips `backbone.parameters()` at 5 after unscaling: everything but the margin
//! head's class centres, which here are the `arcface.*` variables ([`UNCLIPPED_PREFIX`]). The
//! factor is applied unconditionally (1 when the norm is below the maximum), as PyTorch does, so
//! deciding whether to clip never waits for the device.

use super::optim::{foreach_clip, Optimizer};
use anyhow::Result;
use tch::Tensor;

/// Variables under this prefix (the ArcFace class centres) are neither counted nor clipped.
pub(crate) const UNCLIPPED_PREFIX: &str = "arcface.";

/// Multiplies `grads` by min(1, max_norm / (total + 1e-6)) where total is the 2-norm of their
/// 2-norms (one `_foreach_norm`, one `_foreach_mul_`), and returns total (a scalar tensor on their
/// device; `None` without gradients).
pub fn clip_grad_norm_(grads: &[Tensor], max_norm: f64) -> Result<Option<Tensor>> {
    if grads.is_empty() {
        return Ok(None);
    }
    tch::no_grad(|| foreach_clip(grads, max_norm)).map(Some)
}

/// Clips the gradients of `opt`'s parameters outside [`UNCLIPPED_PREFIX`] to `max_norm`; returns
/// their norm before clipping.
pub fn clip_network_grads(opt: &dyn Optimizer, max_norm: f64) -> Result<Option<Tensor>> {
    clip_grad_norm_(&opt.grads_outside(UNCLIPPED_PREFIX), max_norm)
}
