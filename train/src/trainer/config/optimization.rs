//! How the weights move: the optimiser, the learning-rate schedule and its warm-up, each an enum
//! whose variants carry the settings that kind has, so that AdamW's betas on an SGD run, say,
//! cannot be written down.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// Which optimiser updates the weights (the `--optimizer` flag; its settings are in
/// [`OptimizerConfig`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// SGD with `--momentum` and L2 `--weight-decay` (PyTorch's rule).
    #[default]
    Sgd,
    /// AdamW with `--adam-betas`, `--adam-eps` and decoupled `--weight-decay` (PyTorch's rule).
    Adamw,
}

/// The optimiser and its settings (`config.json`: `{"kind": "sgd", "momentum": 0.9, ...}`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum OptimizerConfig {
    /// SGD with momentum and L2 weight decay added to the gradient (PyTorch's rule).
    Sgd {
        /// Momentum, in [0, 1).
        momentum: f64,
        /// L2 weight decay of every weight.
        weight_decay: f64,
    },
    /// AdamW with decoupled weight decay, p *= 1 − lr·wd (PyTorch's rule).
    Adamw {
        /// β1 and β2, each in [0, 1).
        betas: [f64; 2],
        /// ε added to the second moment's root.
        eps: f64,
        /// Decoupled weight decay of every weight.
        weight_decay: f64,
    },
}

impl Default for OptimizerConfig {
    /// SGD with momentum 0.9 and weight decay 5e-4 (arcface_torch's).
    fn default() -> Self {
        OptimizerConfig::Sgd { momentum: 0.9, weight_decay: 5e-4 }
    }
}

impl OptimizerConfig {
    /// AdamW with PyTorch's betas (0.9, 0.999) and ε 1e-8.
    pub fn adamw(weight_decay: f64) -> Self {
        OptimizerConfig::Adamw { betas: [0.9, 0.999], eps: 1e-8, weight_decay }
    }

    /// Which optimiser this is.
    pub fn kind(&self) -> OptimizerKind {
        match self {
            OptimizerConfig::Sgd { .. } => OptimizerKind::Sgd,
            OptimizerConfig::Adamw { .. } => OptimizerKind::Adamw,
        }
    }

    /// The weight decay (SGD's L2 term or AdamW's decoupled one).
    pub fn weight_decay(&self) -> f64 {
        match *self {
            OptimizerConfig::Sgd { weight_decay, .. } | OptimizerConfig::Adamw { weight_decay, .. } => weight_decay,
        }
    }

    /// Copies of each parameter in memory while training: the weights, their gradient and the
    /// momentum buffer (AdamW: two moments).
    pub(crate) fn parameter_copies(&self) -> u64 {
        match self {
            OptimizerConfig::Sgd { .. } => 3,
            OptimizerConfig::Adamw { .. } => 4,
        }
    }

    /// Checks the values (the flags' names in the messages).
    pub fn validate(&self) -> Result<()> {
        let wd = self.weight_decay();
        if !(wd.is_finite() && wd >= 0.0) {
            bail!("--weight-decay must be zero or positive, got {wd}");
        }
        match *self {
            OptimizerConfig::Sgd { momentum, .. } => {
                if !(momentum.is_finite() && (0.0..1.0).contains(&momentum)) {
                    bail!("--momentum must be in [0, 1), got {momentum}");
                }
            }
            OptimizerConfig::Adamw { betas, eps, .. } => {
                if !betas.iter().all(|b| b.is_finite() && (0.0..1.0).contains(b)) {
                    bail!("--adam-betas needs two numbers B1,B2 each in [0, 1), got {betas:?}");
                }
                if !(eps.is_finite() && eps > 0.0) {
                    bail!("--adam-eps must be a positive number, got {eps}");
                }
            }
        }
        Ok(())
    }
}

/// How the learning rate evolves (the `--schedule` flag; its settings are in [`ScheduleConfig`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    /// dlib's rule: shrink the rate when the loss has not fallen for `--plateau-steps` steps.
    Plateau,
    /// Multiply the rate by `--lr-shrink` every `--plateau-steps` steps.
    Step,
    /// Cosine decay from `--lr` to `--min-lr` over the run (`--max-steps` or `--epochs`).
    Cosine,
    /// Polynomial decay from `--lr` to 0 over the run, power `--poly-power` (arcface_torch's).
    Poly,
}

impl ScheduleKind {
    /// The kind's name as the command line spells it.
    pub fn name(self) -> &'static str {
        match self {
            ScheduleKind::Plateau => "plateau",
            ScheduleKind::Step => "step",
            ScheduleKind::Cosine => "cosine",
            ScheduleKind::Poly => "poly",
        }
    }
}

/// The learning-rate schedule after the warm-up, and its settings (`config.json`:
/// `{"kind": "plateau", "patience": 2000, ...}`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum ScheduleConfig {
    /// dlib's rule: multiply the rate by `shrink` when the loss has not fallen for `patience`
    /// steps; the run ends when the rate falls below `min_lr`.
    Plateau {
        /// Steps without a decrease of the loss before the rate shrinks.
        patience: u64,
        /// Factor applied to the rate when it shrinks, in (0, 1].
        shrink: f64,
        /// The rate below which the run ends.
        min_lr: f64,
    },
    /// Multiply the rate by `shrink` every `every` steps while it stays at or above `min_lr`.
    Step {
        /// Steps between shrinks.
        every: u64,
        /// Factor applied at each shrink, in (0, 1].
        shrink: f64,
        /// The rate below which it shrinks no more.
        min_lr: f64,
    },
    /// Cosine decay from the base rate to `min_lr` over the run.
    Cosine {
        /// The rate at the end of the run.
        min_lr: f64,
    },
    /// Polynomial decay from the base rate to 0 over the run (arcface_torch's `PolynomialLRWarmup`).
    Poly {
        /// The exponent (1: linear, arcface_torch's default).
        power: f64,
    },
}

impl Default for ScheduleConfig {
    /// dlib's plateau rule: shrink tenfold after 2000 steps without progress, stop below 1e-5.
    fn default() -> Self {
        ScheduleConfig::Plateau { patience: 2000, shrink: 0.1, min_lr: 1e-5 }
    }
}

impl ScheduleConfig {
    /// Which schedule this is.
    pub fn kind(&self) -> ScheduleKind {
        match self {
            ScheduleConfig::Plateau { .. } => ScheduleKind::Plateau,
            ScheduleConfig::Step { .. } => ScheduleKind::Step,
            ScheduleConfig::Cosine { .. } => ScheduleKind::Cosine,
            ScheduleConfig::Poly { .. } => ScheduleKind::Poly,
        }
    }

    /// The floor of the rate, for the schedules that have one.
    pub fn min_lr(&self) -> Option<f64> {
        match *self {
            ScheduleConfig::Plateau { min_lr, .. }
            | ScheduleConfig::Step { min_lr, .. }
            | ScheduleConfig::Cosine { min_lr } => Some(min_lr),
            ScheduleConfig::Poly { .. } => None,
        }
    }

    /// Whether the schedule decays over the run's length, which must then be known.
    pub(crate) fn needs_length(&self) -> bool {
        matches!(self, ScheduleConfig::Cosine { .. } | ScheduleConfig::Poly { .. })
    }

    /// The poly schedule with arcface_torch's power, 1 (a linear decay).
    pub fn poly() -> Self {
        ScheduleConfig::Poly { power: 1.0 }
    }

    /// Checks the values against the base rate `lr` (the flags' names in the messages).
    pub fn validate(&self, lr: f64) -> Result<()> {
        match *self {
            ScheduleConfig::Plateau { patience: steps, shrink, .. }
            | ScheduleConfig::Step { every: steps, shrink, .. } => {
                if steps == 0 {
                    bail!("--plateau-steps must be at least 1");
                }
                if !(shrink.is_finite() && shrink > 0.0 && shrink <= 1.0) {
                    bail!("--lr-shrink must be in (0, 1], got {shrink}");
                }
            }
            ScheduleConfig::Cosine { .. } => {}
            ScheduleConfig::Poly { power } => {
                if !(power.is_finite() && power > 0.0) {
                    bail!("--poly-power must be a positive number, got {power}");
                }
            }
        }
        if let Some(min_lr) = self.min_lr() {
            if !(min_lr.is_finite() && min_lr >= 0.0 && min_lr < lr) {
                bail!("--min-lr must be zero or positive and below --lr, got {min_lr}");
            }
        }
        Ok(())
    }
}

/// The linear warm-up from 0 to the base rate before the schedule starts (`config.json`:
/// `{"steps": 0}` or `{"epochs": 1}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Warmup {
    /// This many steps (0: none).
    Steps(u64),
    /// This many epochs, in steps of the run's data (arcface_torch's `warmup_epoch`).
    Epochs(u64),
}

impl Default for Warmup {
    /// No warm-up.
    fn default() -> Self {
        Warmup::Steps(0)
    }
}

impl Warmup {
    /// The warm-up in steps, with `steps_per_epoch` steps to an epoch.
    pub fn steps(&self, steps_per_epoch: u64) -> u64 {
        match *self {
            Warmup::Steps(s) => s,
            Warmup::Epochs(e) => e.saturating_mul(steps_per_epoch),
        }
    }
}
