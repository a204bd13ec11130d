//! IR-ResNet (insightface's `iresnet`, arcface_torch's `r18`...`r100`): the "improved residual"
//! network of ArcFace (Deng et al. 2019, arXiv:1801.07698, section 3.2 and figure 7), with its
//! embedding layers built in.
//!
//! - Stem: 3x3 stride-1 convolution, BN, PReLU, so a 112 px face keeps 112 px into the first
//!   stage (ImageNet stems halve twice; faces are small and already aligned).
//! - IBasicBlock: BN -> 3x3 conv -> BN -> PReLU -> 3x3 conv (carrying the stride) -> BN, plus the
//!   identity or a 1x1-conv + BN projection; no activation after the sum.
//! - Four stages of widths 64, 128, 256, 512, each starting with a stride-2 block, so the final
//!   map is [`feature_map_side`] (7 at 112).
//! - Output ("E" head, part of the network): BN2d -> flatten -> dropout -> FC -> BN1d whose scale
//!   is fixed at 1.
//!
//! Parameter names are insightface's `state_dict` names (`conv1`, `bn1`, `prelu`, `layer1.0.bn1`,
//! ..., `layer1.0.downsample.0`, `bn2`, `fc`, `features`) without `num_batches_tracked`, so an
//! arcface_torch `backbone.pth` saved as safetensors loads with `--init`.
//!
//! Convolutions start normal(0, 0.1) as insightface's code draws them; BN scale 1, shift 0; PReLU
//! 0.25; the FC as `nn.Linear`. Unlike insightface, which hard-codes a 7x7 map, the FC is sized
//! from the input, so other input sizes work.

use super::layers::{self, FixedScaleBatchNorm1d};
use super::Arch;
use tch::nn::{self, Init, ModuleT};
use tch::Tensor;

/// insightface's `nn.init.normal_(m.weight, 0, 0.1)` for every convolution.
const CONV_STD: f64 = 0.1;
/// `nn.PReLU`'s initial slope.
const PRELU_INIT: f64 = 0.25;

/// Side of the final feature map for a square input of side `image_size`: the stem keeps the
/// size, each of the four stride-2 3x3 pad-1 stages maps s to (s - 1) / 2 + 1.
pub fn feature_map_side(image_size: i64) -> i64 {
    (0..4).fold(image_size, |s, _| if s < 1 { 0 } else { (s - 1) / 2 + 1 })
}

fn conv(p: nn::Path, c_in: i64, c_out: i64, k: i64, stride: i64) -> nn::Conv2D {
    let cfg = nn::ConvConfig {
        stride,
        padding: k / 2,
        bias: false,
        ws_init: Init::Randn { mean: 0.0, stdev: CONV_STD },
        ..Default::default()
    };
    nn::conv2d(p, c_in, c_out, k, cfg)
}

fn prelu(p: nn::Path, c: i64) -> Tensor {
    p.var("weight", &[c], Init::Const(PRELU_INIT))
}

/// insightface's IBasicBlock.
#[derive(Debug)]
struct IBasicBlock {
    bn1: nn::BatchNorm,
    conv1: nn::Conv2D,
    bn2: nn::BatchNorm,
    prelu: Tensor,
    conv2: nn::Conv2D,
    bn3: nn::BatchNorm,
    downsample: Option<(nn::Conv2D, nn::BatchNorm)>,
}

impl IBasicBlock {
    fn new(p: &nn::Path, c_in: i64, width: i64, stride: i64, zero_init_residual: bool) -> Self {
        let downsample = (stride != 1 || c_in != width).then(|| {
            let d = p / "downsample";
            (conv(&d / "0", c_in, width, 1, stride), layers::batch_norm2d(&d / "1", width))
        });
        // torchvision's rule: zero the branch's last BN, so the block starts as its shortcut.
        // insightface's flag zeroes bn2 instead, which also starts the branch at zero but feeds
        // conv2 zeros, so conv2 gets no gradient until bn2's scale has moved.
        let bn3 = if zero_init_residual {
            layers::batch_norm2d_zero(p / "bn3", width)
        } else {
            layers::batch_norm2d(p / "bn3", width)
        };
        IBasicBlock {
            bn1: layers::batch_norm2d(p / "bn1", c_in),
            conv1: conv(p / "conv1", c_in, width, 3, 1),
            bn2: layers::batch_norm2d(p / "bn2", width),
            prelu: prelu(p / "prelu", width),
            conv2: conv(p / "conv2", width, width, 3, stride),
            bn3,
            downsample,
        }
    }
}

impl ModuleT for IBasicBlock {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let ys = xs
            .apply_t(&self.bn1, train)
            .apply(&self.conv1)
            .apply_t(&self.bn2, train)
            .prelu(&self.prelu)
            .apply(&self.conv2)
            .apply_t(&self.bn3, train);
        let shortcut = match &self.downsample {
            Some((c, b)) => xs.apply(c).apply_t(b, train),
            None => xs.shallow_clone(),
        };
        ys + shortcut
    }
}

/// The whole IR-ResNet, input image to embedding, parameters at the top level of `p`.
#[derive(Debug)]
pub struct IResNet {
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    prelu: Tensor,
    layers: Vec<Vec<IBasicBlock>>,
    bn2: nn::BatchNorm,
    fc: nn::Linear,
    features: FixedScaleBatchNorm1d,
    dropout: f64,
    arch: Arch,
}

impl IResNet {
    /// Builds `arch` (an IR-ResNet) for `image_size` inputs producing `embedding_size` features.
    pub fn new(
        p: &nn::Path,
        arch: Arch,
        image_size: i64,
        embedding_size: i64,
        dropout: f64,
        zero_init_residual: bool,
    ) -> Self {
        debug_assert_eq!(arch.family(), super::arch::Family::IResNet, "{arch:?} is not an IR-ResNet");
        let base = arch.base_width();
        let mut c_in = base;
        let mut layers = Vec::with_capacity(4);
        for (stage, &n) in arch.blocks().iter().enumerate() {
            let width = base << stage;
            let lp = p / format!("layer{}", stage + 1);
            let blocks = (0..n)
                .map(|b| {
                    let block = IBasicBlock::new(
                        &(&lp / b.to_string()),
                        c_in,
                        width,
                        if b == 0 { 2 } else { 1 },
                        zero_init_residual,
                    );
                    c_in = width;
                    block
                })
                .collect();
            layers.push(blocks);
        }
        let side = feature_map_side(image_size);
        IResNet {
            conv1: conv(p / "conv1", 3, base, 3, 1),
            bn1: layers::batch_norm2d(p / "bn1", base),
            prelu: prelu(p / "prelu", base),
            layers,
            bn2: layers::batch_norm2d(p / "bn2", c_in),
            fc: layers::linear(p / "fc", c_in * side * side, embedding_size),
            features: FixedScaleBatchNorm1d::new(p / "features", embedding_size),
            dropout,
            arch,
        }
    }

    /// The architecture this network was built with.
    pub fn arch(&self) -> Arch {
        self.arch
    }
}

impl IResNet {
    /// Stem, stages, `bn2`, flatten and dropout: what arcface_torch runs under autocast.
    pub(crate) fn trunk(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut ys = xs.apply(&self.conv1).apply_t(&self.bn1, train).prelu(&self.prelu);
        for stage in &self.layers {
            for block in stage {
                ys = block.forward_t(&ys, train);
            }
        }
        // flatten() follows the logical NCHW order whatever the strides, so channels-last input
        // gives the same features as contiguous input (and as insightface's NCHW flatten).
        ys.apply_t(&self.bn2, train).flatten(1, -1).dropout(self.dropout, train)
    }

    /// `fc` and the `features` BN1d: what arcface_torch runs in fp32 (`self.fc(x.float())`)
    /// whatever the precision.
    pub(crate) fn tail(&self, ys: &Tensor, train: bool) -> Tensor {
        ys.apply(&self.fc).apply_t(&self.features, train)
    }
}

impl ModuleT for IResNet {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.tail(&self.trunk(xs, train), train)
    }
}
