//! `facekit train`'s flags mapped onto the library's configuration tree, once: each section takes
//! the flags of the kind the command line chose, and a flag given for another kind (AdamW's
//! `--adam-betas` on an SGD run, `--lr-shrink` on a cosine schedule) is refused by name instead of
//! being dropped without a word.

use super::train::TrainArgs;
use anyhow::{bail, Context, Result};
use facekit_train::loss::{HeadConfig, Margin, MarginKind, TaskWeights};
use facekit_train::trainer::config::{OptimizerConfig, OptimizerKind, ScheduleConfig, ScheduleKind, Warmup};
use facekit_train::TrainConfig;
use std::sync::LazyLock;

/// The values inside the library's default sections, which the flags show and take as their
/// defaults (so that the help and the library never disagree).
#[derive(Debug)]
pub struct FlagDefaults {
    /// SGD's momentum.
    pub momentum: f64,
    /// The weight decay.
    pub weight_decay: f64,
    /// AdamW's betas.
    pub adam_betas: [f64; 2],
    /// AdamW's ε.
    pub adam_eps: f64,
    /// The plateau rule's patience.
    pub plateau_steps: u64,
    /// The plateau rule's shrink factor.
    pub lr_shrink: f64,
    /// The plateau rule's floor.
    pub min_lr: f64,
    /// The poly schedule's power.
    pub poly_power: f64,
    /// The warm-up in steps.
    pub warmup_steps: u64,
    /// ArcFace's scale.
    pub arcface_scale: f64,
    /// ArcFace's margin.
    pub arcface_margin: f64,
    /// The tasks' weights, fr,gender,age.
    pub multi_weights: Vec<f64>,
}

/// [`FlagDefaults`], read from the library's defaults once.
pub static FLAG_DEFAULTS: LazyLock<FlagDefaults> = LazyLock::new(|| {
    let d = TrainConfig::default();
    let OptimizerConfig::Sgd { momentum, weight_decay } = d.optimizer else {
        unreachable!("the library's default optimiser is SGD")
    };
    let OptimizerConfig::Adamw { betas, eps, .. } = OptimizerConfig::adamw(weight_decay) else { unreachable!() };
    let ScheduleConfig::Plateau { patience, shrink, min_lr } = d.schedule else {
        unreachable!("the library's default schedule is the plateau rule")
    };
    let ScheduleConfig::Poly { power } = ScheduleConfig::poly() else { unreachable!() };
    let Warmup::Steps(warmup_steps) = d.warmup else { unreachable!("the library's default warm-up is in steps") };
    let Margin::Arcface { m } = d.head.margin else { unreachable!("the library's default margin is ArcFace's") };
    let w = d.head.task_weights;
    FlagDefaults {
        momentum,
        weight_decay,
        adam_betas: betas,
        adam_eps: eps,
        plateau_steps: patience,
        lr_shrink: shrink,
        min_lr,
        poly_power: power,
        warmup_steps,
        arcface_scale: d.head.scale,
        arcface_margin: m,
        multi_weights: vec![w.fr, w.gender, w.age],
    }
});

/// `--adam-betas`'s default as the flag takes it (`0.9,0.999`): clap would show a list default
/// space-separated, which the comma-separated flag does not parse.
pub static ADAM_BETAS: LazyLock<String> =
    LazyLock::new(|| FLAG_DEFAULTS.adam_betas.iter().map(f64::to_string).collect::<Vec<_>>().join(","));

impl TrainArgs {
    /// The library configuration these flags describe; an error names a flag given for a kind
    /// of optimiser, schedule or margin that this run does not use. `FACEKIT_CUDA_SYNC_DEBUG_AFTER`
    /// is read here too ([`TrainConfig::sync_watch_after`]).
    pub fn into_config(self) -> Result<TrainConfig> {
        let given = Given(&self.given);
        let optimizer = self.optimizer(&given)?;
        let schedule = self.schedule(&given)?;
        let head = self.head(&given)?;
        let warmup = match self.warmup_epochs {
            Some(e) => Warmup::Epochs(e),
            None => Warmup::Steps(self.warmup_steps),
        };
        Ok(TrainConfig {
            task: self.task,
            train_sets: self.train_sets,
            valid_sets: self.valid_sets,
            data_dir: self.data_dir,
            arch: self.arch,
            image_size: self.image_size,
            embedding_size: self.embedding_size,
            dropout: self.dropout,
            zero_init_residual: self.zero_init_residual,
            init: self.init,
            batch_size: self.batch_size,
            accumulate: self.accumulate,
            world_size: 1,
            lr: self.lr,
            optimizer,
            schedule,
            warmup,
            max_steps: self.max_steps,
            epochs: self.epochs,
            head,
            clip_grad_norm: self.clip_grad_norm,
            precision: self.precision,
            memory_format: self.memory_format,
            device: self.device,
            no_flip: self.no_flip,
            random_crop: self.random_crop,
            color_jitter: self.color_jitter,
            grey_prob: self.grey_prob,
            workers: self.workers,
            threads: self.threads,
            seed: self.seed,
            valid_every: self.valid_every,
            eval_bin: self.eval_bin,
            eval_every: self.eval_every,
            eval_batch: self.eval_batch,
            best_on: self.best_on,
            checkpoint_every: self.checkpoint_every,
            model_dir: self.model_dir,
            run_name: self.run_name,
            overwrite: self.overwrite,
            resume: self.resume,
            skip_corrupt: self.skip_corrupt,
            allow_changed_data: self.allow_changed_data,
            log_every: self.log_every,
            allow_cpu_fp16: self.allow_cpu_fp16,
            synthetic: self.synthetic,
            sync_watch_after: super::train::sync_watch_after()?,
            given: self.given,
        })
    }

    /// `--optimizer` with its own flags.
    fn optimizer(&self, given: &Given) -> Result<OptimizerConfig> {
        Ok(match self.optimizer {
            OptimizerKind::Sgd => {
                given.refuse(&["adam_betas", "adam_eps"], "--optimizer adamw", "sgd")?;
                OptimizerConfig::Sgd { momentum: self.momentum, weight_decay: self.weight_decay }
            }
            OptimizerKind::Adamw => {
                if given.has("momentum") {
                    bail!("--momentum {} is SGD's; AdamW's moments are set with --adam-betas", self.momentum);
                }
                let [b1, b2] = self.adam_betas[..] else {
                    bail!("--adam-betas needs two numbers B1,B2 each in [0, 1), got {:?}", self.adam_betas)
                };
                OptimizerConfig::Adamw { betas: [b1, b2], eps: self.adam_eps, weight_decay: self.weight_decay }
            }
        })
    }

    /// `--schedule` with its own flags.
    fn schedule(&self, given: &Given) -> Result<ScheduleConfig> {
        let name = self.schedule.name();
        Ok(match self.schedule {
            ScheduleKind::Plateau | ScheduleKind::Step => {
                given.refuse(&["poly_power"], "--schedule poly", name)?;
                let (steps, shrink, min_lr) = (self.plateau_steps, self.lr_shrink, self.min_lr);
                if self.schedule == ScheduleKind::Plateau {
                    ScheduleConfig::Plateau { patience: steps, shrink, min_lr }
                } else {
                    ScheduleConfig::Step { every: steps, shrink, min_lr }
                }
            }
            ScheduleKind::Cosine => {
                given.refuse(&["plateau_steps", "lr_shrink"], "--schedule plateau and step", name)?;
                given.refuse(&["poly_power"], "--schedule poly", name)?;
                ScheduleConfig::Cosine { min_lr: self.min_lr }
            }
            ScheduleKind::Poly => {
                given.refuse(&["plateau_steps", "lr_shrink"], "--schedule plateau and step", name)?;
                given.refuse(&["min_lr"], "--schedule plateau, step and cosine", name)?;
                ScheduleConfig::Poly { power: self.poly_power }
            }
        })
    }

    /// The loss's head: `--arcface-scale`, the margin, `--partial-fc`, `--multi-weights`.
    fn head(&self, given: &Given) -> Result<HeadConfig> {
        let margin = match (&self.margin_values, self.margin) {
            (Some(v), _) if v.len() != 3 => bail!("--margin-values needs three numbers M1,M2,M3, got {v:?}"),
            (Some(v), kind) => Margin::from_values(kind, v[0], v[1], v[2])
                .with_context(|| format!("--margin {} --margin-values", kind.name()))?,
            (None, MarginKind::Arcface) => Margin::Arcface { m: self.arcface_margin },
            (None, kind) => {
                given.refuse(
                    &["arcface_margin"],
                    "--margin arcface (the other margins take --margin-values)",
                    kind.name(),
                )?;
                match kind {
                    MarginKind::Cosface => Margin::Cosface { m: 0.4 },
                    _ => bail!(
                        "--margin combined needs --margin-values M1,M2,M3 (insightface's MXNet example used 1,0.3,0.2)"
                    ),
                }
            }
        };
        let [fr, gender, age] = self.multi_weights[..] else {
            bail!("--multi-weights needs three finite non-negative numbers fr,gender,age, got {:?}", self.multi_weights)
        };
        Ok(HeadConfig {
            scale: self.arcface_scale,
            margin,
            partial_fc: self.partial_fc,
            task_weights: TaskWeights { fr, gender, age },
        })
    }
}

/// The flags this command line gave explicitly (clap's ids).
struct Given<'a>(&'a [String]);

impl Given<'_> {
    /// Whether the flag `id` was given.
    fn has(&self, id: &str) -> bool {
        self.0.iter().any(|g| g == id)
    }

    /// Refuses each of `ids` that was given: they apply to `applies` only, not to `this`.
    fn refuse(&self, ids: &[&str], applies: &str, this: &str) -> Result<()> {
        if let Some(id) = ids.iter().find(|id| self.has(id)) {
            bail!("--{} applies to {applies} only (this run uses {this})", id.replace('_', "-"));
        }
        Ok(())
    }
}
