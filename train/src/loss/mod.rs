//! Losses: ArcFace (or CosFace, or the combined margin) for identity, softmax for gender, DEX-style expected value for age, and their
//! masked, weighted multi-task sum.
//!
//! Labels arrive as i64 tensors with −1 for "unknown"; a record without a label for a task is
//! masked out of that task's loss, and a batch with no labelled record for a task contributes
//! exactly 0 (no NaN, no gradient) to the total. All losses are computed in fp32.

pub mod age;
pub mod arcface;
pub mod margin;
pub mod partial_fc;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tch::nn;
use tch::{Kind, Tensor};

use crate::model::{NetConfig, Outputs, Task};
pub use age::{age_abs_error_sum, age_bins_target, expected_age};
pub use arcface::{margin_cos, masked_cross_entropy, normalize, ArcFace};
pub use margin::{Margin, MarginKind};
pub use partial_fc::{gather_rows, head_memory_bytes, shard_range, take_rows, PartialFc, PartialFcConfig};

/// The heads on the embedding and their losses: the identity head's scale, margin and Partial
/// FC, and the tasks' weights (`config.json`'s `head`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadConfig {
    /// ArcFace's scale s of every logit.
    pub scale: f64,
    /// The margin on the true class.
    pub margin: Margin,
    /// Partial FC: shard the identity centres over the ranks and score this fraction of each
    /// shard per step (every positive class kept); `None`: the full head on every rank.
    pub partial_fc: Option<f64>,
    /// The tasks' weights in the multi-task total (a single task trains at weight 1).
    pub task_weights: TaskWeights,
}

impl Default for HeadConfig {
    /// insightface's ArcFace head: s = 64, m = 0.5, the full head, equal task weights.
    fn default() -> Self {
        HeadConfig { scale: 64.0, margin: Margin::default(), partial_fc: None, task_weights: TaskWeights::default() }
    }
}

impl HeadConfig {
    /// Checks the values (the flags' names in the messages).
    pub fn validate(&self, task: Task) -> Result<()> {
        if !(self.scale.is_finite() && self.scale > 0.0) {
            bail!("--arcface-scale must be a positive number, got {}", self.scale);
        }
        self.margin.validate().with_context(|| match self.margin {
            Margin::Arcface { .. } => "--margin arcface, --arcface-margin".to_string(),
            other => format!("--margin {} --margin-values", other.kind().name()),
        })?;
        let w = self.task_weights;
        if [w.fr, w.gender, w.age].iter().any(|x| !x.is_finite() || *x < 0.0) {
            bail!("--multi-weights needs three finite non-negative numbers fr,gender,age, got {w:?}");
        }
        if task == Task::Multi && [w.fr, w.gender, w.age].iter().all(|x| *x == 0.0) {
            bail!("--multi-weights are all zero: nothing would be learned");
        }
        if let Some(rate) = self.partial_fc {
            if !(rate.is_finite() && rate > 0.0 && rate <= 1.0) {
                bail!("--partial-fc must be a sample rate in (0, 1], got {rate}");
            }
            if !task.has_fr() {
                bail!("--partial-fc shards the ArcFace head, which --task {} does not have", task.name());
            }
        }
        Ok(())
    }
}

/// Weights of each task's loss in the multi-task total.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskWeights {
    /// Weight of the ArcFace identity loss.
    pub fr: f64,
    /// Weight of the gender cross entropy.
    pub gender: f64,
    /// Weight of the age-bin cross entropy.
    pub age: f64,
}

impl Default for TaskWeights {
    fn default() -> Self {
        TaskWeights { fr: 1.0, gender: 1.0, age: 1.0 }
    }
}

/// The labels of one batch, each [N] i64 on the model's device, −1 where unknown.
#[derive(Debug)]
pub struct BatchLabels {
    /// Identity class index.
    pub class: Tensor,
    /// Gender: 0 male, 1 female (the record code, `facekit_shard::Gender::code`), -1 unknown.
    pub gender: Tensor,
    /// Age in whole years.
    pub age: Tensor,
}

/// How many records of the batch carried a label for each task: scalar i64 tensors on the
/// model's device (0 for absent tasks), left on the device so computing them never stalls a GPU
/// step; read them with `int64_value(&[])` when logging.
#[derive(Debug)]
pub struct TaskCounts {
    /// Records with an identity class.
    pub fr: Tensor,
    /// Records with a gender.
    pub gender: Tensor,
    /// Records with an age.
    pub age: Tensor,
}

/// The weighted total to backpropagate and each task's unweighted mean loss.
#[derive(Debug)]
pub struct TaskLosses {
    /// Weighted sum of the task losses (a scalar fp32 tensor).
    pub total: Tensor,
    /// ArcFace cross entropy, when the task has identities.
    pub fr: Option<Tensor>,
    /// Gender cross entropy, when the task has a gender head.
    pub gender: Option<Tensor>,
    /// Age-bin cross entropy, when the task has an age head.
    pub age: Option<Tensor>,
    /// Labelled records per task.
    pub counts: TaskCounts,
}

/// The loss side of a network: ArcFace centres (if any) and the task weights.
pub struct FaceLoss {
    /// ArcFace class centres, present when the task trains identities on the full head.
    pub arcface: Option<ArcFace>,
    /// The centres sharded over the ranks instead ([`FaceLoss::with_partial_fc`]).
    pub partial: Option<PartialFc>,
    task: Task,
    weights: TaskWeights,
    age_bins: i64,
}

impl FaceLoss {
    /// Creates the loss of `head` on the network `config`, ArcFace centres under `p / "arcface"`
    /// (the full head on this rank: `head.partial_fc` is for [`FaceLoss::with_partial_fc`]).
    pub fn new(p: &nn::Path, config: &NetConfig, head: &HeadConfig) -> Result<Self> {
        config.validate()?;
        head.validate(config.task)?;
        let arcface = config
            .task
            .has_fr()
            .then(|| ArcFace::with_margin(p, config.num_classes, config.embedding_size, head.scale, head.margin));
        Ok(FaceLoss {
            arcface,
            partial: None,
            task: config.task,
            weights: task_weights(config.task, head),
            age_bins: config.age_bins,
        })
    }

    /// As [`FaceLoss::new`] with the identity head sharded over the ranks of `group` (Partial
    /// FC at `head.partial_fc`'s sample rate; `seed` drives its sampling of negative centres).
    pub(crate) fn with_partial_fc(
        p: &nn::Path,
        config: &NetConfig,
        head: &HeadConfig,
        group: std::rc::Rc<crate::dist::ProcessGroup>,
        seed: u64,
    ) -> Result<Self> {
        config.validate()?;
        head.validate(config.task)?;
        anyhow::ensure!(
            config.task.has_fr(),
            "Partial FC shards the identity head, which task {} does not have",
            config.task.name()
        );
        let rate = head.partial_fc.context("the head configuration has no Partial FC sample rate")?;
        let partial = PartialFc::new(p, group, PartialFcConfig::of(config, head, rate, seed))?;
        Ok(FaceLoss {
            arcface: None,
            partial: Some(partial),
            task: config.task,
            weights: task_weights(config.task, head),
            age_bins: config.age_bins,
        })
    }

    /// Each task's masked mean loss and their weighted total, for a loss without Partial FC
    /// (whose collectives can fail: use [`FaceLoss::try_losses`]).
    pub fn losses(&self, out: &Outputs, labels: &BatchLabels) -> TaskLosses {
        assert!(self.partial.is_none(), "FaceLoss::losses with Partial FC: call try_losses");
        self.try_losses(out, labels).expect("the full ArcFace head has no failing step")
    }

    /// Each task's masked mean loss and their weighted total.
    pub(crate) fn try_losses(&self, out: &Outputs, labels: &BatchLabels) -> Result<TaskLosses> {
        let device = out.embedding.device();
        let mut total = Tensor::zeros([], (Kind::Float, device));
        let zero = || Tensor::zeros([], (Kind::Int64, device));
        let mut counts = TaskCounts { fr: zero(), gender: zero(), age: zero() };
        let mut fr = self.arcface.as_ref().map(|a| {
            let (loss, n) = a.loss(&out.embedding, &labels.class);
            counts.fr = n;
            loss
        });
        if let Some(p) = &self.partial {
            counts.fr = labels.class.ge(0).sum(Kind::Int64);
            fr = Some(p.loss(&out.embedding, &labels.class)?);
        }
        if let Some(loss) = &fr {
            total += loss * self.weights.fr;
        }
        let gender = out.gender_logits.as_ref().map(|logits| {
            let (loss, n) = masked_cross_entropy(logits, &labels.gender);
            counts.gender = n;
            total += &loss * self.weights.gender;
            loss
        });
        let age = out.age_logits.as_ref().map(|logits| {
            let target = age_bins_target(&labels.age, self.age_bins);
            let (loss, n) = masked_cross_entropy(logits, &target);
            counts.age = n;
            total += &loss * self.weights.age;
            loss
        });
        Ok(TaskLosses { total, fr, gender, age, counts })
    }

    /// The task this loss was built for.
    pub fn task(&self) -> Task {
        self.task
    }
}

/// The tasks' weights: a single-task network trains that task alone at full weight.
fn task_weights(task: Task, head: &HeadConfig) -> TaskWeights {
    match task {
        Task::Multi => head.task_weights,
        _ => TaskWeights { fr: 1.0, gender: 1.0, age: 1.0 },
    }
}
