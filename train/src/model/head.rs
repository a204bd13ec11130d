//! The embedding head: insightface's "E" output layer (Deng et al. 2019, ArcFace, section 3.2):
//! BN2d over the final feature map, dropout, flatten, fully connected to the embedding size, BN1d.
//!
//! Flattening (rather than global pooling) keeps where on the aligned face each feature fired,
//! which is what makes "E" better than pooling for recognition; the cost is a large FC:
//! 2048·7·7 x 512 (51 M weights) at 224 input, 2048·4·4 x 512 (17 M) at 112.
//!
//! Initialised as the PyTorch modules it mirrors: BN scale 1 and shift 0, the FC as `nn.Linear`.

use super::layers;
use tch::nn::{self, ModuleT};
use tch::Tensor;

/// BN2d -> dropout -> flatten -> FC -> BN1d, parameters under `embedding.{bn_in,fc,bn_out}`.
#[derive(Debug)]
pub struct EmbeddingHead {
    bn_in: nn::BatchNorm,
    fc: nn::Linear,
    bn_out: nn::BatchNorm,
    dropout: f64,
}

impl EmbeddingHead {
    /// A head for a `channels` x `side` x `side` feature map producing `embedding_size` features.
    pub fn new(p: &nn::Path, channels: i64, side: i64, embedding_size: i64, dropout: f64) -> Self {
        let bn_in = layers::batch_norm2d(p / "bn_in", channels);
        let fc = layers::linear(p / "fc", channels * side * side, embedding_size);
        let bn_out = layers::batch_norm1d(p / "bn_out", embedding_size);
        EmbeddingHead { bn_in, fc, bn_out, dropout }
    }
}

impl ModuleT for EmbeddingHead {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        // flatten() follows the logical NCHW order whatever the strides, so channels-last input
        // gives the same features as contiguous input.
        xs.apply_t(&self.bn_in, train)
            .dropout(self.dropout, train)
            .flatten(1, -1)
            .apply(&self.fc)
            .apply_t(&self.bn_out, train)
    }
}
