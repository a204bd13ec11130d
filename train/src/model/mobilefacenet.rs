//! MobileFaceNet (Chen et al. 2018, arXiv:1804.07573) as arcface_torch builds it
//! (`backbones/mobilefacenet.py`, `get_mbf(fp16, num_features)`: blocks (1, 4, 6, 2), scale 2,
//! so every width of the paper's table 1 doubled, the last 1x1 convolution kept at 512).
//!
//! - Units: ConvBlock (conv without bias, BN, PReLU), LinearBlock (conv, BN: no activation, the
//!   bottleneck's linear projection), DepthWise (1x1 ConvBlock expanding to `groups` channels,
//!   k x k depthwise ConvBlock carrying the stride, 1x1 LinearBlock projecting back, plus the
//!   identity inside a Residual stage), Residual (a run of DepthWise units at stride 1).
//! - Trunk (`layers.0` ... `layers.7`, widths at scale 2): 3x3/2 ConvBlock 3 -> 128; 3x3/1
//!   ConvBlock 128 -> 128 in 64 groups (arcface_torch keeps the paper's 64 groups at scale 2, so
//!   this one is not depthwise: two channels per group); DepthWise 128 -> 128 /2 (expansion 128),
//!   Residual of 4 (128); DepthWise 128 -> 256 /2 (256), Residual of 6 (256); DepthWise
//!   256 -> 256 /2 (512), Residual of 2 (256). Four stride-2 stages: 7x7 at 112
//!   ([`feature_map_side`]).
//! - `conv_sep`: 1x1 ConvBlock 256 -> 512.
//! - `features` (GDC, the global depthwise convolution): LinearBlock 512 -> 512 in 512 groups with
//!   a kernel the size of the map (7x7 at 112), flatten, dropout (`--dropout`; arcface_torch has
//!   none, and 0, the default, is its network), Linear 512 -> embedding without bias, BN1d.
//!
//! Parameter names are arcface_torch's `state_dict` names without `num_batches_tracked`
//! (`layers.0.layers.0.weight` the stem's convolution, `layers.3.layers.1.layers.2.layers.1.*`
//! the BN of the second residual unit's projection, `conv_sep.layers.2.weight` a PReLU,
//! `features.layers.2.weight` the Linear, `features.layers.3.*` the BN1d), so an arcface_torch
//! mbf `backbone.pth` saved as safetensors loads with `--init`.
//!
//! Initialisation is arcface_torch's `_initialize_weights`: convolutions and the Linear
//! Kaiming-normal, fan-out, ReLU gain; BN scale 1, shift 0; PReLU 0.25. arcface_torch hard-codes
//! the GDC's 7x7 kernel; here it is the map's side, so other input sizes work (the network is
//! meant for 112).

use super::layers;
use tch::nn::{self, Init, ModuleT};
use tch::Tensor;

/// `nn.PReLU`'s initial slope.
const PRELU_INIT: f64 = 0.25;
/// arcface_torch's `get_mbf` width multiplier of the paper's channels.
const SCALE: i64 = 2;
/// Channels out of `conv_sep`, into the GDC.
pub const OUT_CHANNELS: i64 = 512;
/// arcface_torch's `nn.init.kaiming_normal_(w, mode='fan_out', nonlinearity='relu')`.
const KAIMING_FAN_OUT: Init = Init::Kaiming {
    dist: nn::init::NormalOrUniform::Normal,
    fan: nn::init::FanInOut::FanOut,
    non_linearity: nn::init::NonLinearity::ReLU,
};

/// Side of the final feature map for a square input of side `image_size`: the stem and three
/// DepthWise units have stride 2 with a 3x3 pad-1 kernel, mapping s to (s - 1) / 2 + 1.
pub fn feature_map_side(image_size: i64) -> i64 {
    (0..4).fold(image_size, |s, _| if s < 1 { 0 } else { (s - 1) / 2 + 1 })
}

/// ConvBlock (with PReLU) or LinearBlock (without): `layers.0` conv, `layers.1` BN,
/// `layers.2` PReLU.
#[derive(Debug)]
struct ConvBn {
    conv: nn::Conv2D,
    bn: nn::BatchNorm,
    prelu: Option<Tensor>,
}

/// Kernel, stride, padding and groups of a convolution.
#[derive(Clone, Copy)]
struct Geometry {
    k: i64,
    stride: i64,
    padding: i64,
    groups: i64,
}

impl Geometry {
    const POINTWISE: Geometry = Geometry { k: 1, stride: 1, padding: 0, groups: 1 };

    fn k3(stride: i64, groups: i64) -> Self {
        Geometry { k: 3, stride, padding: 1, groups }
    }
}

impl ConvBn {
    fn new(p: &nn::Path, c_in: i64, c_out: i64, g: Geometry, activation: bool) -> Self {
        let l = p / "layers";
        let cfg = nn::ConvConfig {
            stride: g.stride,
            padding: g.padding,
            groups: g.groups,
            bias: false,
            ws_init: KAIMING_FAN_OUT,
            ..Default::default()
        };
        ConvBn {
            conv: nn::conv2d(&l / "0", c_in, c_out, g.k, cfg),
            bn: layers::batch_norm2d(&l / "1", c_out),
            prelu: activation.then(|| (&l / "2").var("weight", &[c_out], Init::Const(PRELU_INIT))),
        }
    }

    /// A LinearBlock whose BN scale starts at 0 (`--zero-init-residual`).
    fn linear_zero(p: &nn::Path, c_in: i64, c_out: i64) -> Self {
        let l = p / "layers";
        let cfg = nn::ConvConfig { bias: false, ws_init: KAIMING_FAN_OUT, ..Default::default() };
        ConvBn {
            conv: nn::conv2d(&l / "0", c_in, c_out, 1, cfg),
            bn: layers::batch_norm2d_zero(&l / "1", c_out),
            prelu: None,
        }
    }
}

impl ModuleT for ConvBn {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let ys = xs.apply(&self.conv).apply_t(&self.bn, train);
        match &self.prelu {
            Some(w) => ys.prelu(w),
            None => ys,
        }
    }
}

/// The inverted-residual bottleneck: expand (1x1), depthwise (3x3, the stride), project (1x1,
/// linear); `layers.0`, `layers.1`, `layers.2`.
#[derive(Debug)]
struct DepthWise {
    expand: ConvBn,
    depthwise: ConvBn,
    project: ConvBn,
    residual: bool,
}

impl DepthWise {
    fn new(p: &nn::Path, c_in: i64, c_out: i64, stride: i64, hidden: i64, residual: bool, zero: bool) -> Self {
        let l = p / "layers";
        // Goyal et al.'s rule, as the other networks apply it: a residual branch's last BN starts
        // at 0 so the unit starts as its identity; units without a shortcut keep theirs at 1.
        let project = if residual && zero {
            ConvBn::linear_zero(&(&l / "2"), hidden, c_out)
        } else {
            ConvBn::new(&(&l / "2"), hidden, c_out, Geometry::POINTWISE, false)
        };
        DepthWise {
            expand: ConvBn::new(&(&l / "0"), c_in, hidden, Geometry::POINTWISE, true),
            depthwise: ConvBn::new(&(&l / "1"), hidden, hidden, Geometry::k3(stride, hidden), true),
            project,
            residual,
        }
    }
}

impl ModuleT for DepthWise {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let ys = self.project.forward_t(&self.depthwise.forward_t(&self.expand.forward_t(xs, train), train), train);
        if self.residual {
            ys + xs
        } else {
            ys
        }
    }
}

/// One entry of arcface_torch's `self.layers` ModuleList.
#[derive(Debug)]
enum Unit {
    Conv(ConvBn),
    DepthWise(DepthWise),
    /// `Residual`: its units under `layers.<i>`.
    Residual(Vec<DepthWise>),
}

impl Unit {
    fn residual(p: &nn::Path, c: i64, n: usize, hidden: i64, zero: bool) -> Self {
        let l = p / "layers";
        Unit::Residual((0..n).map(|i| DepthWise::new(&(&l / i.to_string()), c, c, 1, hidden, true, zero)).collect())
    }
}

impl ModuleT for Unit {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        match self {
            Unit::Conv(c) => c.forward_t(xs, train),
            Unit::DepthWise(d) => d.forward_t(xs, train),
            Unit::Residual(units) => {
                let mut ys = xs.shallow_clone();
                for u in units {
                    ys = u.forward_t(&ys, train);
                }
                ys
            }
        }
    }
}

/// The whole MobileFaceNet, input image to embedding, parameters at the top level of `p`.
#[derive(Debug)]
pub struct MobileFaceNet {
    layers: Vec<Unit>,
    conv_sep: ConvBn,
    gdc: ConvBn,
    linear: nn::Linear,
    bn: nn::BatchNorm,
    dropout: f64,
}

impl MobileFaceNet {
    /// Builds arcface_torch's `get_mbf` network with residual stages of `blocks` units (the first
    /// entry 1 meaning a single grouped convolution, as arcface_torch), for `image_size` inputs,
    /// producing `embedding_size` features.
    pub fn new(
        p: &nn::Path,
        blocks: [usize; 4],
        image_size: i64,
        embedding_size: i64,
        dropout: f64,
        zero_init_residual: bool,
    ) -> Self {
        let z = zero_init_residual;
        let (c1, c2) = (64 * SCALE, 128 * SCALE);
        let l = p / "layers";
        let at = |i: usize| &l / i.to_string();
        let second = if blocks[0] == 1 {
            Unit::Conv(ConvBn::new(&at(1), c1, c1, Geometry::k3(1, 64), true))
        } else {
            Unit::residual(&at(1), c1, blocks[0], 128, z)
        };
        let layers = vec![
            Unit::Conv(ConvBn::new(&at(0), 3, c1, Geometry::k3(2, 1), true)),
            second,
            Unit::DepthWise(DepthWise::new(&at(2), c1, c1, 2, 128, false, z)),
            Unit::residual(&at(3), c1, blocks[1], 128, z),
            Unit::DepthWise(DepthWise::new(&at(4), c1, c2, 2, 256, false, z)),
            Unit::residual(&at(5), c2, blocks[2], 256, z),
            Unit::DepthWise(DepthWise::new(&at(6), c2, c2, 2, 512, false, z)),
            Unit::residual(&at(7), c2, blocks[3], 256, z),
        ];
        let conv_sep = ConvBn::new(&(p / "conv_sep"), c2, OUT_CHANNELS, Geometry::POINTWISE, true);
        let f = p / "features" / "layers";
        let side = feature_map_side(image_size);
        let gdc_geometry = Geometry { k: side, stride: 1, padding: 0, groups: OUT_CHANNELS };
        let gdc = ConvBn::new(&(&f / "0"), OUT_CHANNELS, OUT_CHANNELS, gdc_geometry, false);
        let linear = nn::linear(
            &f / "2",
            OUT_CHANNELS,
            embedding_size,
            nn::LinearConfig { ws_init: KAIMING_FAN_OUT, bs_init: None, bias: false },
        );
        let bn = layers::batch_norm1d(&f / "3", embedding_size);
        MobileFaceNet { layers, conv_sep, gdc, linear, bn, dropout }
    }
}

impl MobileFaceNet {
    /// The residual stages: what arcface_torch runs under autocast.
    pub(crate) fn trunk(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut ys = xs.shallow_clone();
        for unit in &self.layers {
            ys = unit.forward_t(&ys, train);
        }
        ys
    }

    /// `conv_sep` and the GDC `features`: what arcface_torch runs in fp32
    /// (`self.conv_sep(x.float())`) whatever the precision.
    pub(crate) fn tail(&self, ys: &Tensor, train: bool) -> Tensor {
        // The GDC leaves a 1x1 map, so flattening is the same in any memory format.
        ys.apply_t(&self.conv_sep, train)
            .apply_t(&self.gdc, train)
            .flatten(1, -1)
            .dropout(self.dropout, train)
            .apply(&self.linear)
            .apply_t(&self.bn, train)
    }
}

impl ModuleT for MobileFaceNet {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.tail(&self.trunk(xs, train), train)
    }
}
