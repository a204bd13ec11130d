//! ArcFace additive angular margin (Deng et al. 2019, arXiv:1801.07698).
//!
//! The logit of the true class becomes `s·cos(θ + m)`, the others `s·cos(θ)`, where θ is the
//! angle between the L2-normalised embedding and the L2-normalised class centre. The margin
//! uses the cos/sin identity `cos(θ+m) = cos θ·cos m − sin θ·sin m` (no `acos`, so no infinite
//! gradient at ±1), and, like insightface's `recognition/arcface_torch/losses.py` (`ArcFace`,
//! `easy_margin=False`, commit eca1d9a6), falls back to `cos θ − m·sin m` where θ + m > π
//! (that is `cos θ <= cos(π − m)`): there `cos(θ+m)` would increase again with θ and reward
//! moving away from the centre, while the fallback keeps the target logit monotone in θ.
//! Logits are computed in fp32 whatever the embedding's kind, so autocast cannot overflow s=64.
//! CosFace and the combined margin share the centres and the loss: [`super::margin`].

use super::margin::Margin;
use tch::nn::{self, Init};
use tch::{Kind, Tensor};

/// The class centres `arcface.weight` [classes, embedding], the scale and the margin.
#[derive(Debug)]
pub struct ArcFace {
    /// Class centres, one row per identity (not normalised; normalised on use).
    pub weight: Tensor,
    /// Scale s applied to all logits.
    pub s: f64,
    /// The margin on the true class (ArcFace's m is its m2).
    pub margin: Margin,
}

/// Rows whose 1 − cos² falls below this use it instead, so sin θ's gradient stays finite at θ=0.
const MIN_SIN_SQ: f64 = 1e-7;

impl ArcFace {
    /// Creates `classes` centres of dimension `embedding_size` under `p / "arcface"`, with the
    /// ArcFace margin `m`.
    pub fn new(p: &nn::Path, classes: i64, embedding_size: i64, s: f64, m: f64) -> Self {
        Self::with_margin(p, classes, embedding_size, s, Margin::arcface(m))
    }

    /// As [`ArcFace::new`] with any [`Margin`].
    pub fn with_margin(p: &nn::Path, classes: i64, embedding_size: i64, s: f64, margin: Margin) -> Self {
        // insightface draws centres from N(0, 0.01); only their direction matters.
        let weight = (p / "arcface").var("weight", &[classes, embedding_size], Init::Randn { mean: 0.0, stdev: 0.01 });
        ArcFace { weight, s, margin }
    }

    /// cos θ [N, classes] between the embeddings and every centre, in fp32.
    pub fn cosine(&self, embedding: &Tensor) -> Tensor {
        let e = normalize(&embedding.to_kind(Kind::Float));
        let w = normalize(&self.weight.to_kind(Kind::Float));
        e.matmul(&w.tr()).clamp(-1.0, 1.0)
    }

    /// `s·cos θ` for every class: the logits without margin, for validation identity accuracy.
    pub fn logits_no_margin(&self, embedding: &Tensor) -> Tensor {
        self.cosine(embedding) * self.s
    }

    /// Logits with the margin applied on each row's true class; rows with label −1 get none.
    pub fn logits(&self, embedding: &Tensor, labels: &Tensor) -> Tensor {
        let cos = self.cosine(embedding);
        let phi = self.margin.target_cos(&cos);
        let known = labels.ge(0);
        let one_hot =
            cos.zeros_like().scatter(1, &labels.clamp_min(0).unsqueeze(1), &known.to_kind(Kind::Float).unsqueeze(1));
        // Only the target entry of labelled rows changes; elsewhere this adds exactly zero.
        (&cos + one_hot * (phi - &cos)) * self.s
    }

    /// Mean cross entropy of the margin logits over labelled rows, and how many there were.
    /// A batch without labelled rows gives 0 (with zero gradient), not NaN.
    pub fn loss(&self, embedding: &Tensor, labels: &Tensor) -> (Tensor, Tensor) {
        let logits = self.logits(embedding, labels);
        masked_cross_entropy(&logits, labels)
    }
}

/// `cos(θ + m)` where θ + m <= π, else `cos θ − m·sin m` (insightface's easy_margin=False).
pub fn margin_cos(cos: &Tensor, m: f64) -> Tensor {
    let sin_sq: Tensor = 1.0 - cos * cos;
    let sin = sin_sq.clamp(MIN_SIN_SQ, 1.0).sqrt();
    let cos_theta_m = cos * m.cos() - sin * m.sin();
    let threshold = (std::f64::consts::PI - m).cos();
    cos_theta_m.where_self(&cos.gt(threshold), &(cos - m * m.sin()))
}

/// Rows scaled to unit L2 norm (eps keeps an all-zero row finite).
pub fn normalize(xs: &Tensor) -> Tensor {
    let norm = xs.square().sum_dim_intlist(1, true, Kind::Float).sqrt().clamp_min(1e-12);
    xs / norm
}

/// Cross entropy averaged over rows whose label is >= 0; returns (loss, labelled count as i64).
///
/// Per-row losses of unlabelled rows are exactly zero with zero gradient (`ignore_index = -1`),
/// and the sum is divided by max(count, 1) so an all-unlabelled batch gives 0, not 0/0.
pub fn masked_cross_entropy(logits: &Tensor, labels: &Tensor) -> (Tensor, Tensor) {
    let logits = logits.to_kind(Kind::Float);
    let per_row = logits.cross_entropy_loss::<Tensor>(labels, None, tch::Reduction::None, -1, 0.0);
    let count = labels.ge(0).sum(Kind::Int64);
    let loss = per_row.sum(Kind::Float) / count.clamp_min(1).to_kind(Kind::Float);
    (loss, count)
}
