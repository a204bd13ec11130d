//! Which backbone a run trains: torchvision's ResNet-50 (and a tiny copy of it for tests), one of
//! insightface's IR-ResNets, or arcface_torch's MobileFaceNet. A new backbone is one file in this
//! folder and a variant here.

use serde::{Deserialize, Serialize};

/// Which backbone to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Arch {
    /// ResNet-50 V1 (the production network): bottleneck blocks [3, 4, 6, 3], 2048 output channels.
    Resnet50,
    /// The same code with blocks [1, 1, 1, 1] and base width 16, for tests and CPU experiments.
    Tiny,
    /// insightface's IR-ResNet-18 (arcface_torch `r18`): basic blocks [2, 2, 2, 2], for 112 px.
    #[cfg_attr(feature = "clap", value(name = "iresnet18", alias = "r18"))]
    #[serde(rename = "iresnet18")]
    Iresnet18,
    /// insightface's IR-ResNet-34 (`r34`): basic blocks [3, 4, 6, 3], for 112 px.
    #[cfg_attr(feature = "clap", value(name = "iresnet34", alias = "r34"))]
    #[serde(rename = "iresnet34")]
    Iresnet34,
    /// insightface's IR-ResNet-50 (`r50`): basic blocks [3, 4, 14, 3], for 112 px.
    #[cfg_attr(feature = "clap", value(name = "iresnet50", alias = "r50"))]
    #[serde(rename = "iresnet50")]
    Iresnet50,
    /// insightface's IR-ResNet-100 (`r100`): basic blocks [3, 13, 30, 3], for 112 px.
    #[cfg_attr(feature = "clap", value(name = "iresnet100", alias = "r100"))]
    #[serde(rename = "iresnet100")]
    Iresnet100,
    /// insightface's IR-ResNet-200 (`r200`): basic blocks [6, 26, 60, 6], for 112 px.
    #[cfg_attr(feature = "clap", value(name = "iresnet200", alias = "r200"))]
    #[serde(rename = "iresnet200")]
    Iresnet200,
    /// arcface_torch's MobileFaceNet (`mbf`): depthwise bottlenecks [1, 4, 6, 2] at width scale 2,
    /// GDC embedding, for 112 px.
    #[cfg_attr(feature = "clap", value(name = "mobilefacenet", alias = "mbf"))]
    #[serde(rename = "mobilefacenet")]
    MobileFaceNet,
}

/// The families of backbone, which differ in stem, block and embedding head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// torchvision ResNet trunk followed by facekit's [`super::EmbeddingHead`] (`embedding.*`).
    ResNet,
    /// insightface IR-ResNet, whose own `bn2`/`fc`/`features` layers produce the embedding.
    IResNet,
    /// arcface_torch's MobileFaceNet, whose own `conv_sep`/`features` layers produce the embedding.
    MobileFaceNet,
}

impl Arch {
    /// The family this architecture belongs to.
    pub fn family(self) -> Family {
        match self {
            Arch::Resnet50 | Arch::Tiny => Family::ResNet,
            Arch::Iresnet18 | Arch::Iresnet34 | Arch::Iresnet50 | Arch::Iresnet100 | Arch::Iresnet200 => {
                Family::IResNet
            }
            Arch::MobileFaceNet => Family::MobileFaceNet,
        }
    }

    /// Residual blocks per stage (bottlenecks for the ResNets, IBasicBlocks for the IR-ResNets,
    /// DepthWise units of the stride-1 stages for MobileFaceNet, whose first entry 1 stands for
    /// one grouped convolution, as arcface_torch's `blocks`).
    pub fn blocks(self) -> [usize; 4] {
        match self {
            Arch::Resnet50 => [3, 4, 6, 3],
            Arch::Tiny => [1, 1, 1, 1],
            Arch::Iresnet18 => [2, 2, 2, 2],
            Arch::Iresnet34 => [3, 4, 6, 3],
            Arch::Iresnet50 => [3, 4, 14, 3],
            Arch::Iresnet100 => [3, 13, 30, 3],
            Arch::Iresnet200 => [6, 26, 60, 6],
            Arch::MobileFaceNet => [1, 4, 6, 2],
        }
    }

    /// Channels of the stem and of the first stage's 3x3 convolutions; each stage of the ResNets
    /// doubles it (MobileFaceNet's stem: 64 at width scale 2).
    pub(crate) fn base_width(self) -> i64 {
        match self {
            Arch::Tiny => 16,
            Arch::MobileFaceNet => 128,
            _ => 64,
        }
    }

    /// Channels of the final feature map: bottleneck expansion 4 on the last stage's width for
    /// the ResNets, the last stage's width (512) for the IR-ResNets, `conv_sep`'s 512 for
    /// MobileFaceNet.
    pub fn out_channels(self) -> i64 {
        match self.family() {
            Family::ResNet => self.base_width() * 8 * super::resnet::EXPANSION,
            Family::IResNet => self.base_width() * 8,
            Family::MobileFaceNet => super::mobilefacenet::OUT_CHANNELS,
        }
    }

    /// Side of the square final feature map for a square input of side `image_size`.
    pub fn feature_map_side(self, image_size: i64) -> i64 {
        match self.family() {
            Family::ResNet => super::resnet::feature_map_side(image_size),
            Family::IResNet => super::iresnet::feature_map_side(image_size),
            Family::MobileFaceNet => super::mobilefacenet::feature_map_side(image_size),
        }
    }
}
