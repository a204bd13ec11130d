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
pub(crate) const ACOS_CLAMP: f64 = 1e-6;

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

/// A margin and its values: each kind carries only the values it has, so that an ArcFace margin
/// with a cosine term, say, cannot be written. Stored in `config.json` as
/// `{"kind": "arcface", "m": 0.5}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Margin {
    /// cos(θ + m): additive angular margin m, radians (m2 of the combined margin).
    Arcface {
        /// The angle m, radians.
        m: f64,
    },
    /// cos θ − m: additive cosine margin m (m3 of the combined margin).
    Cosface {
        /// The cosine margin m.
        m: f64,
    },
    /// cos(m1·θ + m2) − m3.
    Combined {
        /// Multiplicative angular margin (SphereFace).
        m1: f64,
        /// Additive angular margin, radians (ArcFace).
        m2: f64,
        /// Additive cosine margin (CosFace).
        m3: f64,
    },
}

impl Default for Margin {
    /// insightface's ArcFace margin, m = 0.5.
    fn default() -> Self {
        Margin::arcface(0.5)
    }
}

impl Margin {
    /// ArcFace with angular margin `m`.
    pub fn arcface(m: f64) -> Self {
        Margin::Arcface { m }
    }

    /// The margin of `kind` with the values (m1, m2, m3) (arcface_torch's `margin_list`), refused
    /// when the kind has no such values (an ArcFace margin has m1 = 1 and m3 = 0).
    pub fn from_values(kind: MarginKind, m1: f64, m2: f64, m3: f64) -> Result<Self> {
        let margin = match kind {
            MarginKind::Arcface if m1 != 1.0 || m3 != 0.0 => {
                bail!("the arcface margin has m1 = 1 and m3 = 0, got ({m1}, {m2}, {m3}); use --margin combined for other values")
            }
            MarginKind::Cosface if m1 != 1.0 || m2 != 0.0 => {
                bail!("the cosface margin has m1 = 1 and m2 = 0, got ({m1}, {m2}, {m3}); use --margin combined for other values")
            }
            MarginKind::Arcface => Margin::Arcface { m: m2 },
            MarginKind::Cosface => Margin::Cosface { m: m3 },
            MarginKind::Combined => Margin::Combined { m1, m2, m3 },
        };
        margin.validate()?;
        Ok(margin)
    }

    /// The formula.
    pub fn kind(&self) -> MarginKind {
        match self {
            Margin::Arcface { .. } => MarginKind::Arcface,
            Margin::Cosface { .. } => MarginKind::Cosface,
            Margin::Combined { .. } => MarginKind::Combined,
        }
    }

    /// The values as the combined margin's (m1, m2, m3).
    pub fn values(&self) -> (f64, f64, f64) {
        match *self {
            Margin::Arcface { m } => (1.0, m, 0.0),
            Margin::Cosface { m } => (1.0, 0.0, m),
            Margin::Combined { m1, m2, m3 } => (m1, m2, m3),
        }
    }

    /// Checks that the values are finite and in range.
    pub fn validate(&self) -> Result<()> {
        let (m1, m2, m3) = self.values();
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
        Ok(())
    }

    /// The margin-applied cosine of the true class, element-wise for every entry of `cos`
    /// (fp32 in, fp32 out).
    pub fn target_cos(&self, cos: &Tensor) -> Tensor {
        match *self {
            Margin::Arcface { m } => super::arcface::margin_cos(cos, m),
            Margin::Cosface { m } => cos - m,
            Margin::Combined { m1, m2, m3 } => combined(cos, m1, m2, m3),
        }
    }
}

/// cos(m1·θ + m2) − m3, continued past θ* as the module's documentation says.
fn combined(cos: &Tensor, m1: f64, m2: f64, m3: f64) -> Tensor {
    let theta = cos.clamp(-1.0 + ACOS_CLAMP, 1.0 - ACOS_CLAMP).acos();
    let angle = &theta * m1 + m2;
    let theta_star = (PI - m2) / m1;
    let fallback = cos - (1.0 + theta_star.cos() + m3);
    (angle.cos() - m3).where_self(&angle.le(PI), &fallback)
}
