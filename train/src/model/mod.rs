//! The networks: ResNet-50 V1 (and a tiny variant) with a 512-d embedding head, insightface's
//! IR-ResNet-18/34/50/100/200 and arcface_torch's MobileFaceNet (embedding layers built in), plus
//! the small gender and age heads of the multi-task setups. One file per backbone; [`Arch`] names them.
//!
//! [`FaceNet`] owns parameters only: the losses (and ArcFace's class centres) live in
//! [`crate::loss`] and the optimiser in the trainer, so that multi-GPU training can all-reduce
//! gradients between `backward` and `step`.
//!
//! Input is float NCHW of side [`NetConfig::image_size`], normalised per channel as
//! `(x / 255 - 0.5) / 0.5` (range [-1, 1], insightface's convention); any memory format works,
//! channels-last included.

pub mod arch;
pub mod head;
pub mod health;
pub mod init;
pub(crate) mod iresnet;
pub(crate) mod layers;
pub(crate) mod mobilefacenet;
pub(crate) mod resnet;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::nn::{self, ModuleT};
use tch::Tensor;

pub use arch::{Arch, Family};
pub use head::EmbeddingHead;
pub use iresnet::IResNet;
pub use mobilefacenet::MobileFaceNet;
pub use resnet::{feature_map_side, ResNet};

/// What the network is trained to predict. Stored as `fr`, `gender`, `age`, `multi` (runs of
/// older facekit versions wrote `Fr`, `Gender`, ... in `config.json`: both are read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[cfg_attr(feature = "clap", value(rename_all = "PascalCase"))]
#[serde(rename_all = "kebab-case")]
pub enum Task {
    /// Face recognition: identity classification with ArcFace, embeddings for verification.
    #[cfg_attr(feature = "clap", value(name = "FR"))]
    #[serde(alias = "Fr")]
    Fr,
    /// Gender: 2-way softmax on the embedding (class 0 male, 1 female).
    #[serde(alias = "Gender")]
    Gender,
    /// Age: DEX expected value over one-year bins.
    #[serde(alias = "Age")]
    Age,
    /// All three at once, losses weighted, each masked where its label is unknown.
    #[serde(alias = "Multi")]
    Multi,
}

impl Task {
    /// Lower-case name used in run names and logs.
    pub fn name(self) -> &'static str {
        match self {
            Task::Fr => "fr",
            Task::Gender => "gender",
            Task::Age => "age",
            Task::Multi => "multi",
        }
    }

    /// Whether this task trains identities with ArcFace.
    pub(crate) fn has_fr(self) -> bool {
        matches!(self, Task::Fr | Task::Multi)
    }
    /// Whether this task has a gender head.
    pub(crate) fn has_gender(self) -> bool {
        matches!(self, Task::Gender | Task::Multi)
    }
    /// Whether this task has an age head.
    pub(crate) fn has_age(self) -> bool {
        matches!(self, Task::Age | Task::Multi)
    }
}

/// Everything needed to rebuild the network (not its losses: [`crate::loss::HeadConfig`]); the
/// trainer writes it as `net.json`. Older `net.json` files also hold the margin and the task
/// weights, which are read from `config.json` now and ignored here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NetConfig {
    /// Backbone architecture.
    pub arch: Arch,
    /// Input side in pixels (square); 224 and 112 are the supported sizes for ResNet-50, 112 is
    /// the IR-ResNets' and MobileFaceNet's size.
    pub image_size: i64,
    /// Embedding dimension.
    pub embedding_size: i64,
    /// Dropout probability in the embedding head.
    pub dropout: f64,
    /// What is trained.
    pub task: Task,
    /// Number of identity classes (ArcFace centres); ignored without a recognition task.
    pub num_classes: i64,
    /// Number of one-year age bins (ages 0..age_bins-1; older ages fall in the last bin).
    pub age_bins: i64,
    /// The last BN of every residual block started at scale 0 (`--zero-init-residual`).
    pub zero_init_residual: bool,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            arch: Arch::Resnet50,
            image_size: 224,
            embedding_size: 512,
            // As `--dropout` (and arcface_torch): none. insightface's original MXNet "E" head
            // used 0.4; `--dropout 0.4` gives that.
            dropout: 0.0,
            task: Task::Fr,
            num_classes: 0,
            age_bins: 101,
            zero_init_residual: false,
        }
    }
}

impl NetConfig {
    /// Checks the values a hand-edited `net.json` could get wrong.
    pub fn validate(&self) -> Result<()> {
        if self.arch.feature_map_side(self.image_size) < 1 || self.image_size < 32 {
            bail!("image_size {} is too small (at least 32 pixels)", self.image_size);
        }
        if self.embedding_size < 1 {
            bail!("embedding_size must be positive, got {}", self.embedding_size);
        }
        if !(0.0..1.0).contains(&self.dropout) {
            bail!("dropout must be in [0, 1), got {}", self.dropout);
        }
        if self.task.has_fr() && self.num_classes < 2 {
            bail!("task {:?} needs at least 2 identity classes, got {}", self.task, self.num_classes);
        }
        if self.task.has_age() && self.age_bins < 2 {
            bail!("age_bins must be at least 2, got {}", self.age_bins);
        }
        Ok(())
    }
}

/// Names of parameters outside the reference backbone start with one of these. For the ResNets
/// the backbone is torchvision's trunk and `embedding.*` is facekit's head; an IR-ResNet or a
/// MobileFaceNet has no `embedding.*`, its embedding layers (`bn2`/`fc`/`features`,
/// `conv_sep`/`features`) being part of insightface's backbone.
pub(crate) const HEAD_PREFIXES: [&str; 4] = ["embedding.", "gender_head.", "age_head.", "arcface."];

/// Whether a variable name belongs to the reference backbone: torchvision's `resnet50` trunk
/// for the ResNets, insightface's whole `iresnet` (embedding layers included) for the IR-ResNets,
/// arcface_torch's whole `MobileFaceNet` for MobileFaceNet.
/// Names alone decide, since the two families share no head names.
pub fn is_backbone_param(name: &str) -> bool {
    !HEAD_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// What one forward pass produces.
#[derive(Debug)]
pub struct Outputs {
    /// [N, embedding_size], not L2-normalised.
    pub embedding: Tensor,
    /// [N, 2] gender logits (class 0 = male, 1 = female, the shard labels' codes), when the task has them.
    pub gender_logits: Option<Tensor>,
    /// [N, age_bins] age-bin logits, when the task has them.
    pub age_logits: Option<Tensor>,
}

/// Image to embedding: a ResNet trunk with facekit's head, or an IR-ResNet or MobileFaceNet,
/// which have their own.
#[derive(Debug)]
enum Backbone {
    ResNet { trunk: ResNet, head: EmbeddingHead },
    IResNet(IResNet),
    Mbf(MobileFaceNet),
}

/// Backbone, embedding head and the optional gender/age heads.
#[derive(Debug)]
pub struct FaceNet {
    backbone: Backbone,
    gender: Option<nn::Linear>,
    age: Option<nn::Linear>,
    config: NetConfig,
}

impl FaceNet {
    /// Builds the network with its variables under `p` (backbone names as torchvision's
    /// `resnet50` or insightface's `iresnet`), initialised as those reference implementations.
    pub fn new(p: &nn::Path, config: &NetConfig) -> Result<Self> {
        config.validate()?;
        let (arch, size, e) = (config.arch, config.image_size, config.embedding_size);
        let backbone = match arch.family() {
            Family::ResNet => Backbone::ResNet {
                trunk: ResNet::new(p, arch, config.zero_init_residual),
                head: EmbeddingHead::new(
                    &(p / "embedding"),
                    arch.out_channels(),
                    arch.feature_map_side(size),
                    e,
                    config.dropout,
                ),
            },
            Family::IResNet => {
                Backbone::IResNet(IResNet::new(p, arch, size, e, config.dropout, config.zero_init_residual))
            }
            Family::MobileFaceNet => {
                Backbone::Mbf(MobileFaceNet::new(p, arch.blocks(), size, e, config.dropout, config.zero_init_residual))
            }
        };
        let gender = config.task.has_gender().then(|| layers::linear(p / "gender_head", e, 2));
        let age = config.task.has_age().then(|| layers::linear(p / "age_head", e, config.age_bins));
        Ok(FaceNet { backbone, gender, age, config: config.clone() })
    }

    /// The configuration this network was built from.
    pub fn config(&self) -> &NetConfig {
        &self.config
    }

    /// The embedding [N, embedding_size] (not normalised) of a normalised NCHW batch.
    pub fn embed(&self, xs: &Tensor, train: bool) -> Tensor {
        self.embed_tail(&self.embed_trunk(xs, train), train)
    }

    /// The part of [`FaceNet::embed`] mixed precision runs under autocast: all but the embedding
    /// layers for the IR-ResNets and MobileFaceNet (as arcface_torch, whose `fc`/`features` and
    /// `conv_sep`/GDC take `x.float()`), everything for the ResNets, whose head facekit has always
    /// run under autocast (their runs resume bit for bit).
    pub fn embed_trunk(&self, xs: &Tensor, train: bool) -> Tensor {
        match &self.backbone {
            Backbone::ResNet { trunk, head } => trunk.forward_t(xs, train).apply_t(head, train),
            Backbone::IResNet(net) => net.trunk(xs, train),
            Backbone::Mbf(net) => net.trunk(xs, train),
        }
    }

    /// The rest of [`FaceNet::embed`] after [`FaceNet::embed_trunk`], run in fp32 on its output
    /// cast to fp32 (nothing for the ResNets).
    pub fn embed_tail(&self, ys: &Tensor, train: bool) -> Tensor {
        match &self.backbone {
            Backbone::ResNet { .. } => ys.shallow_clone(),
            Backbone::IResNet(net) => net.tail(ys, train),
            Backbone::Mbf(net) => net.tail(ys, train),
        }
    }

    /// The embedding and whichever task heads this network has.
    pub fn forward(&self, xs: &Tensor, train: bool) -> Outputs {
        self.heads(self.embed(xs, train))
    }

    /// The gender and age heads applied to an embedding from [`FaceNet::embed`]. Mixed precision
    /// runs `embed` under autocast and this outside it, on the embedding cast to fp32.
    pub fn heads(&self, embedding: Tensor) -> Outputs {
        let gender_logits = self.gender.as_ref().map(|l| embedding.apply(l));
        let age_logits = self.age.as_ref().map(|l| embedding.apply(l));
        Outputs { embedding, gender_logits, age_logits }
    }
}
