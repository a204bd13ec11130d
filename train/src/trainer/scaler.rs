//! Dynamic loss scaling for fp16 training, PyTorch's `torch.amp.GradScaler` rule.
//!
//! fp16 gradients below about 6e-8 flush to zero. Multiplying the loss by a large scale S moves
//! them into range; the fp32 gradients of the weights are divided by S again before the step. If
//! any of them is inf or NaN (S was too large), the step is skipped and S halves; after
//! `growth_interval` clean steps in a row S doubles, so S stays near the largest safe value.

use super::amp;
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

/// Loss scale, growth counter and skipped steps, kept on the training device so no step waits
/// for the host.
#[derive(Debug)]
pub struct GradScaler {
    config: ScalerConfig,
    /// [1] f32, as `_amp_update_scale_` wants.
    scale: Tensor,
    /// [1] i32, as `_amp_update_scale_` wants.
    growth_tracker: Tensor,
    /// [1] f32: the flag of [`Self::step`] for [`Self::update`] (the trainer passes its own).
    found_inf: Tensor,
    /// [1] f64: steps skipped so far, counted on the device.
    skipped_steps: Tensor,
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
            skipped_steps: Tensor::from_slice(&[state.skipped_steps as f64]).to_device(device),
        }
    }

    /// Scale, growth tracker and skipped steps as one [3] f64 device tensor, for one read
    /// ([`ScalerState::from_values`] turns the values back into the state).
    pub(crate) fn state_tensor(&self) -> Tensor {
        Tensor::cat(
            &[
                self.scale.to_kind(Kind::Double),
                self.growth_tracker.to_kind(Kind::Double),
                self.skipped_steps.shallow_clone(),
            ],
            0,
        )
    }

    /// The state to checkpoint, read from the device here: for tests and tools (the trainer reads
    /// [`Self::state_tensor`] through its counted door).
    pub fn state(&self) -> ScalerState {
        ScalerState::from_values(&Vec::<f64>::try_from(self.state_tensor().to_device(Device::Cpu)).unwrap_or_default())
    }

    /// The current scale (reads it from the device).
    pub fn scale_value(&self) -> f64 {
        self.scale.double_value(&[0])
    }

    /// `loss · scale`, the scalar to backpropagate instead of `loss`.
    pub fn scale(&self, loss: &Tensor) -> Tensor {
        loss * self.scale.squeeze()
    }

    /// Divides `grads` by the scale in place and sets `found_inf` (a [1] f32 on their device) to 1
    /// when any of them holds an inf or NaN (it is never reset here: flags set before stay).
    pub fn unscale_(&self, grads: &mut [Tensor], found_inf: &mut Tensor) -> Result<()> {
        // In double then back, as PyTorch, though for powers of two the reciprocal is exact.
        let inv_scale = self.scale.to_kind(Kind::Double).reciprocal().to_kind(Kind::Float);
        amp::unscale_(grads, found_inf, &inv_scale)
    }

    /// Unscales the gradients of `opt`'s parameters and applies the optimiser's step with `lr`
    /// unless one holds an inf or NaN; returns whether it was applied (reading the flag from the
    /// device: for tests and tools, the trainer never reads it per step). Call [`Self::update`]
    /// after it.
    pub fn step(&mut self, opt: &mut dyn Optimizer, lr: f64) -> Result<bool> {
        let mut found_inf = Tensor::zeros([1], (Kind::Float, self.scale.device()));
        self.unscale_(&mut opt.grads(), &mut found_inf)?;
        opt.step_unless(lr, &found_inf)?;
        let applied = found_inf.double_value(&[0]) == 0.0;
        self.found_inf = found_inf;
        Ok(applied)
    }

    /// [`Self::update_with`] the flag of the last [`Self::step`].
    pub fn update(&mut self) {
        let found_inf = self.found_inf.shallow_clone();
        self.update_with(&found_inf);
    }

    /// After a step whose skip flag was `found_inf` (agreed by every rank): counts it as skipped
    /// when set, halves the scale then, doubles it after `growth_interval` clean steps in a row
    /// (libtorch's `_amp_update_scale_`), all on the device.
    pub(crate) fn update_with(&mut self, found_inf: &Tensor) {
        let c = self.config;
        let _ = self.skipped_steps.g_add_(&found_inf.to_kind(Kind::Double));
        let _ = self.scale.internal_amp_update_scale_(
            &self.growth_tracker,
            found_inf,
            c.growth_factor,
            c.backoff_factor,
            c.growth_interval,
        );
    }
}
