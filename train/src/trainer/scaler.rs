//! Dynamic loss scaling for fp16 training, PyTorch's `torch.amp.GradScaler` rule.
//!
//! fp16 gradients below about 6e-8 flush to zero. Multiplying the loss by a large scale S moves
//! them into range; the fp32 gradients of the weights are divided by S again before the step. If
//! any of them is inf or NaN (S was too large), the step is skipped and S halves; after
//! `growth_interval` clean steps in a row S doubles, so S stays near the largest safe value.

use super::amp;
use super::clip;
use super::optim::Optimizer;
pub use super::state::ScalerState;
use anyhow::Result;
use tch::{Device, Kind, Tensor};

/// The scaler's constants (PyTorch's defaults in [`ScalerConfig::default`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScalerConfig {
    /// Scale of the first step.
    pub init_scale: f64,
    /// Factor applied after `growth_interval` steps without inf/NaN gradients.
    pub growth_factor: f64,
    /// Factor applied when a step's gradients hold an inf or NaN.
    pub backoff_factor: f64,
    /// Clean steps in a row before the scale grows.
    pub growth_interval: i64,
}

impl Default for ScalerConfig {
    fn default() -> Self {
        ScalerConfig { init_scale: 65536.0, growth_factor: 2.0, backoff_factor: 0.5, growth_interval: 2000 }
    }
}

/// Loss scale and growth counter, kept on the training device so no step waits for the host.
#[derive(Debug)]
pub struct GradScaler {
    config: ScalerConfig,
    /// [1] f32, as `_amp_update_scale_` wants.
    scale: Tensor,
    /// [1] i32, as `_amp_update_scale_` wants.
    growth_tracker: Tensor,
    /// [1] f32: 1 when the last unscaled gradients held an inf or NaN.
    found_inf: Tensor,
    skipped_steps: u64,
}

impl GradScaler {
    /// A scaler at `config.init_scale` for tensors on `device`.
    pub fn new(config: ScalerConfig, device: Device) -> Self {
        let state = ScalerState { scale: config.init_scale, growth_tracker: 0, skipped_steps: 0 };
        Self::from_state(config, &state, device)
    }

    /// A scaler continuing from a checkpoint's `state`.
    pub fn from_state(config: ScalerConfig, state: &ScalerState, device: Device) -> Self {
        GradScaler {
            config,
            scale: Tensor::from_slice(&[state.scale as f32]).to_device(device),
            growth_tracker: Tensor::from_slice(&[state.growth_tracker as i32]).to_device(device),
            found_inf: Tensor::zeros([1], (Kind::Float, device)),
            skipped_steps: state.skipped_steps,
        }
    }

    /// The state to checkpoint (reads two numbers from the device).
    pub fn state(&self) -> ScalerState {
        ScalerState {
            scale: self.scale.double_value(&[0]),
            growth_tracker: self.growth_tracker.int64_value(&[0]),
            skipped_steps: self.skipped_steps,
        }
    }

    /// The current scale (reads it from the device).
    pub fn scale_value(&self) -> f64 {
        self.scale.double_value(&[0])
    }

    /// Steps skipped so far because of inf/NaN gradients.
    pub fn skipped_steps(&self) -> u64 {
        self.skipped_steps
    }

    /// `loss · scale`, the scalar to backpropagate instead of `loss`.
    pub fn scale(&self, loss: &Tensor) -> Tensor {
        loss * self.scale.squeeze()
    }

    /// Divides the gradients of `opt`'s parameters by the scale and, if none holds an inf or NaN,
    /// applies the optimiser's step with `lr`; returns whether the step was applied. Call
    /// [`Self::update`] after it.
    pub fn step(&mut self, opt: &mut dyn Optimizer, lr: f64) -> Result<bool> {
        Ok(self.step_clipped(opt, lr, None, &mut |overflow| Ok(overflow))?.0)
    }

    /// As [`Self::step`], clipping the unscaled gradients of the network (not the ArcFace centres)
    /// to the norm `clip` in between, as arcface_torch's `amp.unscale_`, `clip_grad_norm_`,
    /// `amp.step`; also returns the norm before clipping (a device scalar) when clipping.
    /// `agree` turns this process's "gradients overflowed" into every rank's (see
    /// [`super::replicas::Replicas::agree_any`]), so that all skip the same steps.
    pub fn step_clipped(
        &mut self,
        opt: &mut dyn Optimizer,
        lr: f64,
        clip: Option<f64>,
        agree: &mut dyn FnMut(bool) -> Result<bool>,
    ) -> Result<(bool, Option<Tensor>)> {
        let _ = self.found_inf.zero_();
        // In double then back, as PyTorch, though for powers of two the reciprocal is exact.
        let inv_scale = self.scale.to_kind(Kind::Double).reciprocal().to_kind(Kind::Float);
        let mut grads = opt.grads();
        amp::unscale_(&mut grads, &mut self.found_inf, &inv_scale)?;
        // Clipping an inf/NaN gradient makes the others NaN, harmless: that step is skipped.
        let norm = clip.and_then(|max| clip::clip_network_grads(opt, max));
        // Deciding whether to skip needs the flag on the host, as PyTorch's scaler.step does.
        let overflow = agree(self.found_inf.double_value(&[0]) != 0.0)?;
        if overflow {
            // The shared flag, so that update() backs off on every rank alike.
            let _ = self.found_inf.fill_(1.0);
        }
        let finite = !overflow;
        if finite {
            opt.step(lr);
        } else {
            self.skipped_steps += 1;
        }
        Ok((finite, norm))
    }

    /// Halves the scale after a step with inf/NaN gradients, doubles it after
    /// `growth_interval` clean steps in a row (libtorch's `_amp_update_scale_`).
    pub fn update(&mut self) {
        let c = self.config;
        let _ = self.scale.internal_amp_update_scale_(
            &self.growth_tracker,
            &self.found_inf,
            c.growth_factor,
            c.backoff_factor,
            c.growth_interval,
        );
    }
}
