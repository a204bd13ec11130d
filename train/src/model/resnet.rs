//! ResNet V1 backbone with bottleneck blocks (He et al. 2015, "Deep Residual Learning for Image
//! Recognition", arXiv:1512.03385), laid out exactly like `torchvision.models.resnet50`.
//!
//! Two choices follow torchvision rather than the original paper or insightface:
//! - the stride-2 of a downsampling bottleneck sits on its 3x3 convolution (`conv2`), not on the
//!   first 1x1 ("ResNet V1.5"), which torchvision uses and which is slightly more accurate;
//! - the stem is torchvision's (7x7/2 convolution, BN, ReLU, 3x3/2 max-pool), so the final
//!   feature map is 7x7 at 224 input and 4x4 at 112 input ([`feature_map_side`]). insightface's
//!   iresnet replaces this stem with a 3x3/1 convolution to keep 7x7 at 112; keeping torchvision's
//!   lets an exported backbone load into `torchvision.models.resnet50` unchanged.
//!
//! Parameter names mirror torchvision (`conv1`, `bn1`, `layer1.0.conv1`, `layer1.0.downsample.0`,
//! `layer1.0.downsample.1`, ...), so the backbone's safetensors keys match its `state_dict`
//! (torchvision's BN also carries `num_batches_tracked`, which tch does not keep).
//!
//! Initialisation is torchvision's: convolutions Kaiming-normal fan-out, BN scale 1 and shift 0.

use super::layers;
use super::Arch;
use tch::nn::{self, ModuleT};
use tch::Tensor;

/// Bottleneck output channels are this multiple of their 3x3 width (He et al. 2015, table 1).
pub(crate) const EXPANSION: i64 = 4;

/// Side of the square feature map the backbone produces for a square input of side `image_size`.
///
/// Stem conv 7x7/2 pad 3, max-pool 3x3/2 pad 1, then three stride-2 3x3 pad 1 stages.
pub fn feature_map_side(image_size: i64) -> i64 {
    let down = |s: i64, k: i64, p: i64| (s + 2 * p - k) / 2 + 1;
    let mut s = down(image_size, 7, 3);
    s = down(s, 3, 1);
    for _ in 0..3 {
        s = down(s, 3, 1);
    }
    s
}

/// Convolution without bias (the following BN has one), Kaiming-normal fan-out init as torchvision.
fn conv(p: nn::Path, c_in: i64, c_out: i64, k: i64, stride: i64, padding: i64) -> nn::Conv2D {
    let cfg = nn::ConvConfig {
        stride,
        padding,
        bias: false,
        ws_init: nn::Init::Kaiming {
            dist: nn::init::NormalOrUniform::Normal,
            fan: nn::init::FanInOut::FanOut,
            non_linearity: nn::init::NonLinearity::ReLU,
        },
        ..Default::default()
    };
    nn::conv2d(p, c_in, c_out, k, cfg)
}

fn bn(p: nn::Path, c: i64) -> nn::BatchNorm {
    layers::batch_norm2d(p, c)
}

/// 1x1 reduce, 3x3 (carrying the stride), 1x1 expand, plus an identity or projected shortcut.
#[derive(Debug)]
struct Bottleneck {
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    conv2: nn::Conv2D,
    bn2: nn::BatchNorm,
    conv3: nn::Conv2D,
    bn3: nn::BatchNorm,
    downsample: Option<(nn::Conv2D, nn::BatchNorm)>,
}

impl Bottleneck {
    fn new(p: &nn::Path, c_in: i64, width: i64, stride: i64, zero_init_residual: bool) -> Self {
        let c_out = width * EXPANSION;
        let downsample = (stride != 1 || c_in != c_out).then(|| {
            let d = p / "downsample";
            (conv(&d / "0", c_in, c_out, 1, stride, 0), bn(&d / "1", c_out))
        });
        Bottleneck {
            conv1: conv(p / "conv1", c_in, width, 1, 1, 0),
            bn1: bn(p / "bn1", width),
            conv2: conv(p / "conv2", width, width, 3, stride, 1),
            bn2: bn(p / "bn2", width),
            conv3: conv(p / "conv3", width, c_out, 1, 1, 0),
            // torchvision's `zero_init_residual`: the block starts as its shortcut.
            bn3: if zero_init_residual { layers::batch_norm2d_zero(p / "bn3", c_out) } else { bn(p / "bn3", c_out) },
            downsample,
        }
    }
}

impl ModuleT for Bottleneck {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let ys = xs
            .apply(&self.conv1)
            .apply_t(&self.bn1, train)
            .relu()
            .apply(&self.conv2)
            .apply_t(&self.bn2, train)
            .relu()
            .apply(&self.conv3)
            .apply_t(&self.bn3, train);
        let shortcut = match &self.downsample {
            Some((c, b)) => xs.apply(c).apply_t(b, train),
            None => xs.shallow_clone(),
        };
        (ys + shortcut).relu()
    }
}

/// The convolutional trunk: stem and four stages, no pooling or classifier.
#[derive(Debug)]
pub struct ResNet {
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    layers: Vec<Vec<Bottleneck>>,
    arch: Arch,
}

impl ResNet {
    /// Builds the trunk with its parameters directly under `p` (torchvision names); with
    /// `zero_init_residual` every bottleneck's bn3 starts at scale 0.
    pub fn new(p: &nn::Path, arch: Arch, zero_init_residual: bool) -> Self {
        let base = arch.base_width();
        let mut c_in = base;
        let mut layers = Vec::with_capacity(4);
        for (stage, &n) in arch.blocks().iter().enumerate() {
            let width = base << stage;
            let stride = if stage == 0 { 1 } else { 2 };
            let lp = p / format!("layer{}", stage + 1);
            let mut blocks = Vec::with_capacity(n);
            for b in 0..n {
                let s = if b == 0 { stride } else { 1 };
                blocks.push(Bottleneck::new(&(&lp / b.to_string()), c_in, width, s, zero_init_residual));
                c_in = width * EXPANSION;
            }
            layers.push(blocks);
        }
        ResNet { conv1: conv(p / "conv1", 3, base, 7, 2, 3), bn1: bn(p / "bn1", base), layers, arch }
    }

    /// The architecture this trunk was built with.
    pub fn arch(&self) -> Arch {
        self.arch
    }
}

impl ModuleT for ResNet {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut ys =
            xs.apply(&self.conv1).apply_t(&self.bn1, train).relu().max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false);
        for stage in &self.layers {
            for block in stage {
                ys = block.forward_t(&ys, train);
            }
        }
        ys
    }
}
