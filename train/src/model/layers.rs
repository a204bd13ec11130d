//! Layers initialised as PyTorch initialises them, which tch does not by default: tch's batch
//! norm draws its scale uniform in [0, 1] (PyTorch: 1), and tch's linear layer draws its weight
//! Kaiming-uniform with gain sqrt(2), bound sqrt(6 / fan_in), 2.45 times PyTorch's 1 / sqrt(fan_in).
//! Starting from the reference implementations' values is what makes their learning rates and
//! schedules carry over.

use tch::nn::{self, Init};
use tch::Tensor;

/// BatchNorm2d with PyTorch's initial state: scale 1, shift 0, eps 1e-5, momentum 0.1.
pub(crate) fn batch_norm2d(p: nn::Path, c: i64) -> nn::BatchNorm {
    nn::batch_norm2d(p, c, reference_bn())
}

/// BatchNorm1d with PyTorch's initial state.
pub(crate) fn batch_norm1d(p: nn::Path, c: i64) -> nn::BatchNorm {
    nn::batch_norm1d(p, c, reference_bn())
}

/// BatchNorm2d whose scale starts at 0: the last BN of a residual branch under
/// `--zero-init-residual`, so that each block starts as the identity (Goyal et al. 2017).
pub(crate) fn batch_norm2d_zero(p: nn::Path, c: i64) -> nn::BatchNorm {
    nn::batch_norm2d(p, c, nn::BatchNormConfig { ws_init: Init::Const(0.0), ..reference_bn() })
}

fn reference_bn() -> nn::BatchNormConfig {
    nn::BatchNormConfig {
        eps: 1e-5,
        momentum: 0.1,
        ws_init: Init::Const(1.0),
        bs_init: Init::Const(0.0),
        ..Default::default()
    }
}

/// The bound of `nn.Linear`'s default initialisation: Kaiming-uniform with a = sqrt(5) gives
/// sqrt(6 / ((1 + 5) fan_in)) = 1 / sqrt(fan_in) for the weight, and the bias uses the same.
pub(crate) fn linear_bound(fan_in: i64) -> f64 {
    1.0 / (fan_in as f64).sqrt()
}

/// A fully connected layer initialised as PyTorch's `nn.Linear`: weight and bias uniform in
/// ±1/sqrt(in_dim).
pub fn linear(p: nn::Path, in_dim: i64, out_dim: i64) -> nn::Linear {
    let b = linear_bound(in_dim);
    let u = Init::Uniform { lo: -b, up: b };
    nn::linear(p, in_dim, out_dim, nn::LinearConfig { ws_init: u, bs_init: Some(u), bias: true })
}

/// BatchNorm1d whose scale is fixed at 1 and never trained (insightface's `features` layer sets
/// `requires_grad = False` on it): the scale is a non-trainable variable, so no optimiser sees it,
/// but it is saved and loaded under `weight` like any BN scale.
#[derive(Debug)]
pub(crate) struct FixedScaleBatchNorm1d {
    weight: Tensor,
    bias: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
}

impl FixedScaleBatchNorm1d {
    /// `c` features, variables `weight` (fixed, 1), `bias`, `running_mean`, `running_var` under `p`.
    pub fn new(p: nn::Path, c: i64) -> Self {
        FixedScaleBatchNorm1d {
            weight: p.ones_no_train("weight", &[c]),
            bias: p.var("bias", &[c], Init::Const(0.0)),
            running_mean: p.zeros_no_train("running_mean", &[c]),
            running_var: p.ones_no_train("running_var", &[c]),
        }
    }
}

impl nn::ModuleT for FixedScaleBatchNorm1d {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        Tensor::batch_norm(
            xs,
            Some(&self.weight),
            Some(&self.bias),
            Some(&self.running_mean),
            Some(&self.running_var),
            train,
            0.1,
            1e-5,
            true,
        )
    }
}
