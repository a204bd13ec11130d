//! The margin applied to the true class's cosine: insightface's combined margin
//! `cos(m1·θ + m2) − m3` (SphereFace m1, ArcFace m2, CosFace m3), in three kinds.
//!
//! - [`MarginKind::Arcface`] (m1 = 1, m3 = 0) is [`super::arcface::margin_cos`], unchanged: the
//!   cos/sin identity, with insightface's fallback `cos θ − m2·sin m2` where θ + m2 > π;
//! - [`MarginKind::Cosface`] (m1 = 1, m2 = 0) is `cos θ − m3`: no angle, so no `acos`;
//! - [`MarginKind::Combined`] takes θ = acos(cos θ), cos θ clamped to ±(1 − [`ACOS_CLAMP`]) so
//!   acos's derivative stays finite. Past θ* = (π − m2)/m1, where m1·θ + m2 would pass π and
//!   cos(m1·θ + m2) would rise again (rewarding a larger angle), the target continues as
//!   `cos θ − (1 + cos θ*) − m3`: insightface's idea for ArcFace (fall back to a CosFace-like
//!   subtraction), with the constant chosen so the target is continuous at θ* and keeps falling
//!   with θ. For ArcFace's values this differs from `cos θ − m2·sin m2`, which jumps at θ*;
//!   insightface's MXNet combined margin (`arcface_mxnet/train.py`) had no fallback at all.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::f64::consts::PI;
use tch::Tensor;

/// cos θ is kept within ±(1 − this) before `acos` in the combined margin.
pub const ACOS_CLAMP: f64 = 1e-6;

/// Which margin formula the true class's logit gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum MarginKind {
    /// Additive angular margin cos(θ + m2) (m1 = 1, m3 = 0).
    #[default]
    Arcface,
    /// Additive cosine margin cos θ − m3 (m1 = 1, m2 = 0).
    Cosface,
    /// cos(m1·θ + m2) − m3 with any of the three.
    Combined,
}

impl MarginKind {
    /// The kind's name as the command line spells it.
    pub fn name(self) -> &'static str {
        match self {
            MarginKind::Arcface => "arcface",
            MarginKind::Cosface => "cosface",
            MarginKind::Combined => "combined",
        }
    }
}

/// A margin: its kind and (m1, m2, m3).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Margin {
    /// The formula.
    pub kind: MarginKind,
    /// Multiplicative angular margin (SphereFace).
    pub m1: f64,
    /// Additive angular margin, radians (ArcFace).
    pub m2: f64,
    /// Additive cosine margin (CosFace).
    pub m3: f64,
}

impl Margin {
    /// ArcFace with angular margin `m`.
    pub fn arcface(m: f64) -> Self {
        Margin { kind: MarginKind::Arcface, m1: 1.0, m2: m, m3: 0.0 }
    }

    /// The margin a network configuration records (`net.json`; ArcFace's m is m2).
    pub fn of(config: &crate::model::NetConfig) -> Self {
        Margin { kind: config.margin, m1: config.margin_m1, m2: config.arcface_m, m3: config.margin_m3 }
    }

    /// Checks that the values are in range and fit the kind.
    pub fn validate(&self) -> Result<()> {
        let Margin { kind, m1, m2, m3 } = *self;
        if ![m1, m2, m3].iter().all(|v| v.is_finite()) {
            bail!("margin values must be finite, got ({m1}, {m2}, {m3})");
        }
        if !(1.0..=10.0).contains(&m1) {
            bail!("margin m1 (multiplicative) must be in [1, 10], got {m1}");
        }
        if !(0.0..PI / 2.0).contains(&m2) {
            bail!("margin m2 (additive angle) must be in [0, pi/2) radians, got {m2}");
        }
        if !(0.0..1.0).contains(&m3) {
            bail!("margin m3 (additive cosine) must be in [0, 1), got {m3}");
        }
        match kind {
            MarginKind::Arcface if m1 != 1.0 || m3 != 0.0 => {
                bail!("the arcface margin has m1 = 1 and m3 = 0, got ({m1}, {m2}, {m3}); use --margin combined for other values")
            }
            MarginKind::Cosface if m1 != 1.0 || m2 != 0.0 => {
                bail!("the cosface margin has m1 = 1 and m2 = 0, got ({m1}, {m2}, {m3}); use --margin combined for other values")
            }
            _ => Ok(()),
        }
    }

    /// The margin-applied cosine of the true class, element-wise for every entry of `cos`
    /// (fp32 in, fp32 out).
    pub fn target_cos(&self, cos: &Tensor) -> Tensor {
        match self.kind {
            MarginKind::Arcface => super::arcface::margin_cos(cos, self.m2),
            MarginKind::Cosface => cos - self.m3,
            MarginKind::Combined => self.combined(cos),
        }
    }

    fn combined(&self, cos: &Tensor) -> Tensor {
        let theta = cos.clamp(-1.0 + ACOS_CLAMP, 1.0 - ACOS_CLAMP).acos();
        let angle = &theta * self.m1 + self.m2;
        let theta_star = (PI - self.m2) / self.m1;
        let fallback = cos - (1.0 + theta_star.cos() + self.m3);
        (angle.cos() - self.m3).where_self(&angle.le(PI), &fallback)
    }
}
