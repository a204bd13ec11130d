//! Age as DEX (Rothe, Timofte, Van Gool 2015/2018, "Deep EXpectation of apparent age"):
//! classification over one-year bins 0..B−1 trained with cross entropy on the true bin, and
//! prediction as the softmax-weighted expected bin value, evaluated as mean absolute error in years.
//!
//! Ages at or above B−1 fall in the last bin (the shard labels go up to 116 in UTKFace).

use tch::{Kind, Tensor};

/// The training target bin for each age label (−1 stays −1 = unknown).
pub fn age_bins_target(ages: &Tensor, bins: i64) -> Tensor {
    ages.clamp_max(bins - 1)
}

/// Expected age in years [N] from age-bin logits [N, bins].
pub fn expected_age(logits: &Tensor) -> Tensor {
    let bins = logits.size()[1];
    let p = logits.to_kind(Kind::Float).softmax(1, Kind::Float);
    let years = Tensor::arange(bins, (Kind::Float, logits.device()));
    (p * years).sum_dim_intlist(1, false, Kind::Float)
}

/// Sum of absolute errors in years over rows with a known age, and how many rows that was.
pub fn age_abs_error_sum(logits: &Tensor, ages: &Tensor) -> (f64, i64) {
    let known = ages.ge(0);
    let err = (expected_age(logits) - ages.to_kind(Kind::Float)).abs();
    let sum = err.masked_select(&known).sum(Kind::Double).double_value(&[]);
    (sum, known.sum(Kind::Int64).int64_value(&[]))
}
