//! The full configuration of a training run: every `facekit train` flag, saved as `config.json`
//! so that a run can be reproduced and resumed exactly.

use crate::loss::{Margin, MarginKind};
use crate::model::{Arch, Task};
use crate::run::paths::RunPaths;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// How the learning rate evolves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    /// dlib's rule: shrink the rate when the loss has not fallen for `--plateau-steps` steps.
    Plateau,
    /// Multiply the rate by `--lr-shrink` every `--plateau-steps` steps.
    Step,
    /// Cosine decay from `--lr` to `--min-lr` over the run (`--max-steps` or `--epochs`).
    Cosine,
    /// Polynomial decay from `--lr` to 0 over the run, power `--poly-power` (arcface_torch's).
    Poly,
}

/// Which optimiser updates the weights.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// SGD with `--momentum` and L2 `--weight-decay` (PyTorch's rule).
    #[default]
    Sgd,
    /// AdamW with `--adam-betas`, `--adam-eps` and decoupled `--weight-decay` (PyTorch's rule).
    Adamw,
}

/// Numeric precision of the forward and backward passes (weights always stay fp32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum PrecisionKind {
    /// fp16 on CUDA, fp32 on the CPU.
    Auto,
    /// 32-bit floats everywhere.
    Fp32,
    /// Autocast to IEEE half in the backbone, with dynamic loss scaling.
    Fp16,
    /// Autocast to bfloat16 in the backbone (no loss scaling needed).
    Bf16,
}

impl PrecisionKind {
    /// The precision `auto` stands for on this device: fp16 on CUDA, fp32 on the CPU (CPU
    /// autocast works but is slower than fp32 on CPUs without bf16/fp16 matrix units).
    pub fn resolve(self, on_cuda: bool) -> PrecisionKind {
        match (self, on_cuda) {
            (PrecisionKind::Auto, true) => PrecisionKind::Fp16,
            (PrecisionKind::Auto, false) => PrecisionKind::Fp32,
            (p, _) => p,
        }
    }
}

/// Memory layout of the input images and convolution weights.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum MemoryFormatKind {
    /// Channels-last on CUDA, contiguous on the CPU.
    #[default]
    Auto,
    /// NHWC strides (what cuDNN's fastest convolutions read).
    ChannelsLast,
    /// Standard NCHW strides.
    Contiguous,
}

impl MemoryFormatKind {
    /// The format `auto` stands for on this device: channels-last on CUDA, contiguous on the CPU.
    pub fn resolve(self, on_cuda: bool) -> MemoryFormatKind {
        match (self, on_cuda) {
            (MemoryFormatKind::Auto, true) => MemoryFormatKind::ChannelsLast,
            (MemoryFormatKind::Auto, false) => MemoryFormatKind::Contiguous,
            (m, _) => m,
        }
    }
}

/// Every setting of a training run, as the library takes it and `config.json` stores it (the
/// command line maps its flags onto it; their help is in `facekit train -h`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Task to train (case-insensitive): FR, Gender, Age or Multi.
    #[serde(with = "task_name")]
    pub task: Task,
    /// Training datasets (names in --data-dir, or paths); several are concatenated.
    pub train_sets: Vec<String>,
    /// Validation datasets (names in --data-dir, or paths); several are concatenated.
    pub valid_sets: Vec<String>,
    /// Folder where bare dataset names are looked up.
    pub data_dir: PathBuf,
    /// Network architecture.
    pub arch: Arch,
    /// Input image side in pixels (records of another size are resized).
    pub image_size: u32,
    /// Embedding dimension.
    pub embedding_size: i64,
    /// Dropout probability before the embedding layer.
    pub dropout: f64,
    /// Start the last BN of every residual block at scale 0, so each block starts as its shortcut.
    #[serde(default)]
    pub zero_init_residual: bool,
    /// Start a new run from these weights: a .safetensors file or a facekit run folder (see `model::init`).
    #[serde(default)]
    pub init: Option<PathBuf>,
    /// Images per micro-batch on each rank (a step sees batch x ranks x --accumulate images).
    pub batch_size: usize,
    /// Micro-batches whose gradients are summed before each optimiser step (gradient accumulation).
    #[serde(default = "one")]
    pub accumulate: u64,
    /// Ranks training together (set by the launcher, not a flag): with `batch_size` it fixes the
    /// global batch, which a resume on another number of ranks keeps.
    #[serde(default = "one_rank")]
    pub world_size: usize,
    /// Partial FC: shard the ArcFace centres over the ranks and train on this fraction of each
    /// shard per step (every positive class kept) [default: off, the full head on every rank].
    #[serde(default)]
    pub partial_fc: Option<f64>,
    /// Initial learning rate.
    pub lr: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// Weight decay of every weight: SGD's L2 term, AdamW's decoupled p *= 1 − lr·wd.
    pub weight_decay: f64,
    /// Learning-rate schedule.
    pub schedule: ScheduleKind,
    /// Plateau: steps without loss decrease before shrinking; step: steps between shrinks.
    pub plateau_steps: u64,
    /// Factor applied to the learning rate when it shrinks.
    pub lr_shrink: f64,
    /// Learning rate below which training stops (plateau) or where it ends (cosine).
    pub min_lr: f64,
    /// Steps of linear warm-up from 0 to --lr.
    pub warmup_steps: u64,
    /// Stop after this many steps in total [default: none].
    pub max_steps: Option<u64>,
    /// Stop after this many passes over the training sets [default: none].
    pub epochs: Option<u64>,
    /// ArcFace scale s.
    pub arcface_scale: f64,
    /// ArcFace additive angular margin m (radians).
    pub arcface_margin: f64,
    /// Margin on the true class: arcface cos(θ+m2), cosface cos θ − m3, combined cos(m1·θ+m2) − m3.
    #[serde(default)]
    pub margin: MarginKind,
    /// The margin's m1,m2,m3 [default: arcface 1,--arcface-margin,0; cosface 1,0,0.4; combined: required].
    #[serde(default)]
    pub margin_values: Option<Vec<f64>>,
    /// Optimiser.
    #[serde(default)]
    pub optimizer: OptimizerKind,
    /// AdamW's β1,β2.
    #[serde(default = "default_adam_betas")]
    pub adam_betas: Vec<f64>,
    /// AdamW's ε.
    #[serde(default = "default_adam_eps")]
    pub adam_eps: f64,
    /// Exponent of --schedule poly's decay (1: linear, arcface_torch's default).
    #[serde(default = "default_poly_power")]
    pub poly_power: f64,
    /// Linear warm-up of E epochs (E x batches per epoch steps; arcface_torch's warmup_epoch).
    #[serde(default)]
    pub warmup_epochs: Option<u64>,
    /// Clip the network's gradients (not the ArcFace centres) to this global 2-norm [default: off].
    #[serde(default)]
    pub clip_grad_norm: Option<f64>,
    /// Multi task: weights of the fr, gender and age losses.
    pub multi_weights: Vec<f64>,
    /// Backbone arithmetic (auto: fp16 on CUDA, fp32 on CPU); weights, heads, losses stay fp32.
    pub precision: PrecisionKind,
    /// Layout of images and conv weights (auto: channels-last on CUDA, contiguous on CPU).
    #[serde(default)]
    pub memory_format: MemoryFormatKind,
    /// Device: auto (CUDA when present), cpu, cuda or cuda:N.
    pub device: String,
    /// Do not mirror training images (by default half of them are, chosen per image and epoch).
    #[serde(default)]
    pub no_flip: bool,
    /// Random crop: keep a square of side uniform in [1-F, 1] of the chip, anywhere, resized back.
    #[serde(default)]
    pub random_crop: f32,
    /// Brightness and contrast jitter: each factor uniform in [1-F, 1+F].
    #[serde(default)]
    pub color_jitter: f32,
    /// Probability of turning a training image grey.
    #[serde(default)]
    pub grey_prob: f32,
    /// Threads decoding and augmenting images (0: all cores on CUDA, a quarter of them on the CPU).
    pub workers: usize,
    /// libtorch's compute threads (0: the cores the decode workers leave, at least 1).
    #[serde(default)]
    pub threads: usize,
    /// Seed of the data order, augmentation, initial weights and dropout.
    pub seed: u64,
    /// Validate every N steps (0: only at the end).
    pub valid_every: u64,
    /// insightface verification files (lfw.bin, cfp_fp.bin, ...) scored during training (10-fold, flip test).
    #[serde(default)]
    pub eval_bin: Vec<PathBuf>,
    /// Score the --eval-bin files every N steps (0: only at the end).
    #[serde(default = "default_eval_every")]
    pub eval_every: u64,
    /// Images per forward pass when scoring --eval-bin files (0: twice --batch-size).
    #[serde(default)]
    pub eval_batch: usize,
    /// Pick the best checkpoint by the accuracy on this --eval-bin set (its file stem, e.g. lfw) instead of validation.
    #[serde(default)]
    pub best_on: Option<String>,
    /// Write the `last` checkpoint every N steps (0: only at the end).
    pub checkpoint_every: u64,
    /// Folder holding one sub-folder per run.
    pub model_dir: PathBuf,
    /// Name of this run's folder in --model-dir [default: TASK-UNIXTIME].
    pub run_name: Option<String>,
    /// Delete an existing run folder of the same name first (otherwise reusing a name is refused).
    #[serde(default)]
    pub overwrite: bool,
    /// Continue the run RUN (a name in --model-dir, or its folder) from its `last` checkpoint.
    pub resume: Option<String>,
    /// Skip corrupt records (counted and reported) instead of stopping.
    pub skip_corrupt: bool,
    /// With --resume: continue even though a dataset's manifest changed since the run started (repacked data).
    #[serde(default)]
    pub allow_changed_data: bool,
    /// Print a progress line every N steps.
    pub log_every: u64,
    /// Allow `--precision fp16` on a CPU device, which is refused otherwise: without AMX-FP16 or
    /// AVX-512 FP16 its convolutions fall back to reference kernels about 100 times slower than
    /// fp32. For tests of the fp16 path, and CPUs with those units.
    #[serde(default)]
    pub allow_cpu_fp16: bool,
    /// Benchmarks: train on one batch of random pixels and labels made once on the device instead
    /// of the training sets' records (which still give the class count and the epoch's length),
    /// so that a run times the step without the data path (scripts/bench-gpu.sh).
    #[serde(default)]
    pub synthetic: bool,
    /// Benchmarks: after this many warm-up steps of the process, CUDA's sync debug mode is `error`
    /// during each step, so a step that makes the host wait for the GPU fails, naming the call
    /// (CUDA only; the command line takes it from `FACEKIT_CUDA_SYNC_DEBUG_AFTER`,
    /// scripts/bench-gpu.sh). Not saved.
    #[serde(skip)]
    pub sync_watch_after: Option<u64>,
    /// The settings the command line gave explicitly (field names, as `log_every`): a resumed run
    /// applies or refuses each of them and keeps its saved value for every other one. A setting
    /// that differs from [`TrainConfig::default`] counts as given too. Not saved.
    #[serde(skip)]
    pub given: Vec<String>,
}

impl Default for TrainConfig {
    /// The defaults of `facekit train` (the command line takes its defaults from here): FR on the
    /// ResNet-50, SGD 0.9 / 5e-4 at 0.1 with dlib's plateau rule, batch 50 at 224 px.
    fn default() -> Self {
        TrainConfig {
            task: Task::Fr,
            train_sets: Vec::new(),
            valid_sets: Vec::new(),
            data_dir: PathBuf::from("training"),
            arch: Arch::Resnet50,
            image_size: 224,
            embedding_size: 512,
            dropout: 0.0,
            zero_init_residual: false,
            init: None,
            batch_size: 50,
            accumulate: 1,
            world_size: 1,
            partial_fc: None,
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 5e-4,
            schedule: ScheduleKind::Plateau,
            plateau_steps: 2000,
            lr_shrink: 0.1,
            min_lr: 1e-5,
            warmup_steps: 0,
            max_steps: None,
            epochs: None,
            arcface_scale: 64.0,
            arcface_margin: 0.5,
            margin: MarginKind::Arcface,
            margin_values: None,
            optimizer: OptimizerKind::Sgd,
            adam_betas: default_adam_betas(),
            adam_eps: default_adam_eps(),
            poly_power: default_poly_power(),
            warmup_epochs: None,
            clip_grad_norm: None,
            multi_weights: vec![1.0, 1.0, 1.0],
            precision: PrecisionKind::Auto,
            memory_format: MemoryFormatKind::Auto,
            device: "auto".into(),
            no_flip: false,
            random_crop: 0.0,
            color_jitter: 0.0,
            grey_prob: 0.0,
            workers: 0,
            threads: 0,
            seed: 1,
            valid_every: 1000,
            eval_bin: Vec::new(),
            eval_every: default_eval_every(),
            eval_batch: 0,
            best_on: None,
            checkpoint_every: 1000,
            model_dir: PathBuf::from("Model"),
            run_name: None,
            overwrite: false,
            resume: None,
            skip_corrupt: false,
            allow_changed_data: false,
            log_every: 50,
            allow_cpu_fp16: false,
            synthetic: false,
            sync_watch_after: None,
            given: Vec::new(),
        }
    }
}

impl TrainConfig {
    /// Checks the settings that clap cannot: every number is finite and in its range.
    pub fn validate(&self) -> Result<()> {
        if !(2..=65_536).contains(&self.batch_size) {
            bail!("--batch-size must be between 2 (batch norm needs two images) and 65536, got {}", self.batch_size);
        }
        if !(32..=4096).contains(&self.image_size) {
            bail!("--image-size must be between 32 and 4096 pixels, got {}", self.image_size);
        }
        if !(1..=65_536).contains(&self.embedding_size) {
            bail!("--embedding-size must be between 1 and 65536, got {}", self.embedding_size);
        }
        let finite = |name: &str, v: f64, ok: bool, range: &str| -> Result<()> {
            if !v.is_finite() || !ok {
                bail!("{name} must be {range}, got {v}");
            }
            Ok(())
        };
        finite("--lr", self.lr, self.lr > 0.0, "a positive number")?;
        finite("--momentum", self.momentum, (0.0..1.0).contains(&self.momentum), "in [0, 1)")?;
        finite("--weight-decay", self.weight_decay, self.weight_decay >= 0.0, "zero or positive")?;
        finite("--dropout", self.dropout, (0.0..1.0).contains(&self.dropout), "in [0, 1)")?;
        finite("--lr-shrink", self.lr_shrink, self.lr_shrink > 0.0 && self.lr_shrink <= 1.0, "in (0, 1]")?;
        finite(
            "--min-lr",
            self.min_lr,
            self.min_lr >= 0.0 && self.min_lr < self.lr,
            "zero or positive and below --lr",
        )?;
        finite("--arcface-scale", self.arcface_scale, self.arcface_scale > 0.0, "a positive number")?;
        finite(
            "--arcface-margin",
            self.arcface_margin,
            (0.0..std::f64::consts::PI).contains(&self.arcface_margin),
            "in [0, pi) radians",
        )?;
        if self.multi_weights.len() != 3 || self.multi_weights.iter().any(|w| !w.is_finite() || *w < 0.0) {
            bail!(
                "--multi-weights needs three finite non-negative numbers fr,gender,age, got {:?}",
                self.multi_weights
            );
        }
        if self.task == Task::Multi && self.multi_weights.iter().all(|w| *w == 0.0) {
            bail!("--multi-weights are all zero: nothing would be learned");
        }
        if self.plateau_steps == 0 {
            bail!("--plateau-steps must be at least 1");
        }
        if self.max_steps == Some(0) || self.epochs == Some(0) {
            bail!("--max-steps and --epochs must be at least 1 when given");
        }
        if self.workers > facekit_data::MAX_WORKERS {
            bail!("--workers {}: at most {} decode threads are allowed", self.workers, facekit_data::MAX_WORKERS);
        }
        if self.threads > 1024 {
            bail!("--threads {}: at most 1024 compute threads are allowed", self.threads);
        }
        if let Some(name) = &self.run_name {
            if !facekit_io::bounded::is_plain_name(name) || name.starts_with('.') {
                bail!(
                    "--run-name '{name}' must be a plain folder name inside --model-dir (no '/', not '..', not hidden)"
                );
            }
        }
        self.augment().validate().map_err(|e| anyhow::anyhow!("--random-crop/--color-jitter/--grey-prob: {e}"))?;
        self.validate_eval_bins()?;
        if self.synthetic && (self.resume.is_some() || !self.valid_sets.is_empty() || !self.eval_bin.is_empty()) {
            bail!("--synthetic trains on random batches, which --resume, --valid-sets and --eval-bin cannot use: they need the real records");
        }
        if self.schedule == ScheduleKind::Cosine && self.max_steps.is_none() && self.epochs.is_none() {
            bail!("--schedule cosine needs --max-steps or --epochs (the length of the decay)");
        }
        self.validate_optimisation()
    }

    /// The optimiser, poly schedule, warm-up, clipping and margin settings.
    fn validate_optimisation(&self) -> Result<()> {
        let d = TrainConfig::default();
        match self.optimizer {
            OptimizerKind::Adamw => {
                if self.adam_betas.len() != 2
                    || !self.adam_betas.iter().all(|b| b.is_finite() && (0.0..1.0).contains(b))
                {
                    bail!("--adam-betas needs two numbers B1,B2 each in [0, 1), got {:?}", self.adam_betas);
                }
                if !(self.adam_eps.is_finite() && self.adam_eps > 0.0) {
                    bail!("--adam-eps must be a positive number, got {}", self.adam_eps);
                }
                if self.momentum != d.momentum {
                    bail!("--momentum {} is SGD's; AdamW's moments are set with --adam-betas", self.momentum);
                }
            }
            OptimizerKind::Sgd => {
                if self.adam_betas != d.adam_betas || self.adam_eps != d.adam_eps {
                    bail!("--adam-betas and --adam-eps apply to --optimizer adamw only (this run uses sgd)");
                }
            }
        }
        if self.schedule == ScheduleKind::Poly {
            if self.max_steps.is_none() && self.epochs.is_none() {
                bail!("--schedule poly needs --max-steps or --epochs (the length of the decay)");
            }
            if !(self.poly_power.is_finite() && self.poly_power > 0.0) {
                bail!("--poly-power must be a positive number, got {}", self.poly_power);
            }
        } else if self.poly_power != d.poly_power {
            bail!("--poly-power applies to --schedule poly only (this run uses {:?})", self.schedule);
        }
        if self.warmup_epochs.is_some() && self.warmup_steps != 0 {
            bail!("--warmup-epochs and --warmup-steps both set the warm-up: give one of them");
        }
        if let Some(c) = self.clip_grad_norm {
            if !(c.is_finite() && c > 0.0) {
                bail!("--clip-grad-norm must be a positive number, got {c}");
            }
        }
        self.margin_spec()?;
        self.validate_parallel()
    }

    /// Gradient accumulation, the world size and Partial FC.
    fn validate_parallel(&self) -> Result<()> {
        if !(1..=1024).contains(&self.accumulate) {
            bail!("--accumulate must be between 1 and 1024 micro-batches, got {}", self.accumulate);
        }
        if self.world_size == 0 {
            bail!("the world size must be at least 1");
        }
        if let Some(rate) = self.partial_fc {
            if !(rate.is_finite() && rate > 0.0 && rate <= 1.0) {
                bail!("--partial-fc must be a sample rate in (0, 1], got {rate}");
            }
            if !self.task.has_fr() {
                bail!("--partial-fc shards the ArcFace head, which --task {} does not have", self.task.name());
            }
        }
        Ok(())
    }

    /// Images per optimiser step over all ranks.
    pub fn global_batch(&self) -> usize {
        self.batch_size * self.world_size * self.accumulate as usize
    }

    /// This configuration on `world` ranks with the same global batch: the per-rank batch scales
    /// by `world_size / world` (an error when it does not divide).
    pub fn on_world(mut self, world: usize) -> Result<Self> {
        if world == self.world_size {
            return Ok(self);
        }
        let images = self.batch_size * self.world_size;
        if !images.is_multiple_of(world) || images / world < 2 {
            bail!(
                "the run trains on {} ranks x batch {} = {images} images per micro-batch, which {world} ranks cannot split evenly \
                 into batches of at least 2: resume it on a number of ranks that divides {images}",
                self.world_size,
                self.batch_size
            );
        }
        self.batch_size = images / world;
        self.world_size = world;
        Ok(self)
    }

    /// The margin `--margin`, `--margin-values` and `--arcface-margin` describe, checked.
    pub fn margin_spec(&self) -> Result<Margin> {
        let (m1, m2, m3) = match (&self.margin_values, self.margin) {
            (Some(v), _) if v.len() != 3 => bail!("--margin-values needs three numbers M1,M2,M3, got {v:?}"),
            (Some(v), _) => (v[0], v[1], v[2]),
            (None, MarginKind::Arcface) => (1.0, self.arcface_margin, 0.0),
            (None, MarginKind::Cosface) => (1.0, 0.0, 0.4),
            (None, MarginKind::Combined) => {
                bail!("--margin combined needs --margin-values M1,M2,M3 (insightface's MXNet example used 1,0.3,0.2)")
            }
        };
        let margin = Margin { kind: self.margin, m1, m2, m3 };
        margin.validate().map_err(|e| anyhow::anyhow!("--margin {} --margin-values: {e}", self.margin.name()))?;
        Ok(margin)
    }

    /// The configuration a resumed run continues with: `saved` (already on this run's number of
    /// ranks), with the settings of this command line (`self`) that it gave ([`TrainConfig::given`])
    /// and that may change in the middle of a run ([`RESUME_APPLIES`]); with the list of what
    /// changed (`--log-every 5 (was 50)`). A given setting that would change what the run trains
    /// (its data, network, optimiser, schedule, precision ...) and differs from the saved one is
    /// an error naming every such flag: it is never silently ignored.
    pub fn resumed(&self, saved: &TrainConfig) -> Result<(TrainConfig, Vec<String>)> {
        let now = serde_json::to_value(self)?;
        let defaults = serde_json::to_value(TrainConfig::default())?;
        let mut merged = serde_json::to_value(saved)?;
        let given = |key: &str| self.given.iter().any(|g| g == key) || now[key] != defaults[key];
        // The run's length is one decision: given either, the command line sets both.
        let length_given = given("max_steps") || given("epochs");
        let (mut changed, mut refused) = (Vec::new(), Vec::new());
        for (key, value) in now.as_object().into_iter().flatten() {
            let key = key.as_str();
            let applies = RESUME_APPLIES.contains(&key) && (given(key) || (length_given && LENGTH.contains(&key)));
            if applies && merged[key] != *value {
                changed.push(format!("{} {} (was {})", flag_name(key), shown(value), shown(&merged[key])));
                merged[key] = value.clone();
            } else if given(key) && !applies && !RESUME_IGNORES.contains(&key) && merged[key] != *value {
                refused.push(format!("{} {} (the run's: {})", flag_name(key), shown(value), shown(&merged[key])));
            }
        }
        if !refused.is_empty() {
            bail!(
                "{} cannot change when a run is resumed: it would not continue the same run. Leave {} out to continue with the \
                 run's own settings, or start a new run from its weights (--init RUN)",
                refused.join(", "),
                if refused.len() == 1 { "it" } else { "them" }
            );
        }
        let mut merged: TrainConfig = serde_json::from_value(merged).context("the merged configuration")?;
        merged.resume = self.resume.clone();
        // Accepting changed data is a decision about this resume only, never inherited by the next.
        merged.allow_changed_data = self.allow_changed_data;
        merged.sync_watch_after = self.sync_watch_after;
        Ok((merged, changed))
    }

    /// Steps of linear warm-up: `--warmup-steps`, or `--warmup-epochs` times `batches_per_epoch`.
    pub fn warmup_steps_for(&self, batches_per_epoch: u64) -> u64 {
        self.warmup_epochs.map_or(self.warmup_steps, |e| e.saturating_mul(batches_per_epoch))
    }

    /// `--eval-bin` names each set once (by file stem), `--best-on` one of them, `--eval-batch`
    /// is in range. The files themselves are read in setup, before the run folder is touched.
    fn validate_eval_bins(&self) -> Result<()> {
        if self.eval_batch > 65_536 {
            bail!("--eval-batch must be at most 65536, got {}", self.eval_batch);
        }
        let names = self.eval_bin_names();
        for (i, n) in names.iter().enumerate() {
            if names[..i].contains(n) {
                bail!("--eval-bin names two sets '{n}': each file's stem names its results, so they must differ");
            }
        }
        if let Some(best) = &self.best_on {
            if !names.contains(best) {
                let given = if names.is_empty() {
                    "no --eval-bin files were given".to_string()
                } else {
                    format!("the --eval-bin sets are {}", names.join(", "))
                };
                bail!("--best-on '{best}' names no --eval-bin set ({given})");
            }
        }
        Ok(())
    }

    /// The name of each `--eval-bin` set: its file stem (`lfw` for `data/lfw.bin`).
    pub fn eval_bin_names(&self) -> Vec<String> {
        self.eval_bin.iter().map(|p| crate::embedding::bins::bin_name(p)).collect()
    }

    /// Images per forward pass of `--eval-bin` scoring: `--eval-batch`, or twice `--batch-size`
    /// (no gradients or activations are kept, so inference fits about twice the training batch).
    pub fn eval_batch_size(&self) -> usize {
        if self.eval_batch == 0 {
            2 * self.batch_size
        } else {
            self.eval_batch
        }
    }

    /// The training loader's augmentations.
    pub fn augment(&self) -> facekit_data::Augment {
        facekit_data::Augment {
            flip: !self.no_flip,
            crop: self.random_crop,
            color_jitter: self.color_jitter,
            grey: self.grey_prob,
        }
    }

    /// The run's folder name: `--run-name`, or the task and the start time.
    pub fn run_name(&self) -> String {
        self.run_name.clone().unwrap_or_else(|| {
            let secs =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            format!("{}-{secs}", self.task.name())
        })
    }
}

/// The settings a resumed run takes from its new command line when given: how long it goes on,
/// where and with how many threads it runs, where its data is (its manifests are checked against
/// the saved ones), and how often it logs, validates, evaluates and saves. Nothing the run
/// learns from depends on them.
pub const RESUME_APPLIES: [&str; 14] = [
    "max_steps",
    "epochs",
    "device",
    "workers",
    "threads",
    "data_dir",
    "model_dir",
    "log_every",
    "valid_every",
    "eval_every",
    "eval_batch",
    "checkpoint_every",
    "skip_corrupt",
    "allow_cpu_fp16",
];

/// The run's length, which a resume takes whole from the command line that gives any part of it.
const LENGTH: [&str; 2] = ["max_steps", "epochs"];

/// Fields that say how to find or start a run rather than how it trains: never compared on resume
/// (`--init` with `--resume` is refused on its own, the world size is the launcher's,
/// `--allow-changed-data` is this resume's own).
const RESUME_IGNORES: [&str; 5] = ["resume", "init", "overwrite", "world_size", "allow_changed_data"];

/// A setting's flag: `log_every` is `--log-every`, `task` the positional TASK.
fn flag_name(key: &str) -> String {
    if key == "task" {
        "TASK".into()
    } else {
        format!("--{}", key.replace('_', "-"))
    }
}

/// A setting's value as the command line writes it.
fn shown(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "none".into(),
        serde_json::Value::Array(a) if a.is_empty() => "none".into(),
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(a) => a.iter().map(shown).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// PyTorch's AdamW betas.
fn default_adam_betas() -> Vec<f64> {
    vec![0.9, 0.999]
}

/// PyTorch's AdamW eps.
fn default_adam_eps() -> f64 {
    1e-8
}

/// arcface_torch's `PolynomialLRWarmup` power (train_v2.py leaves the default).
fn one() -> u64 {
    1
}

fn one_rank() -> usize {
    1
}

fn default_poly_power() -> f64 {
    1.0
}

/// arcface_torch's verification interval (`verbose = 2000`).
fn default_eval_every() -> u64 {
    2000
}

/// `config.json`: the configuration plus the command line that produced it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedConfig {
    /// The command line that started the run, argument by argument.
    pub command_line: Vec<String>,
    /// The command lines of each `--resume` since, in order.
    #[serde(default)]
    pub resumed_with: Vec<Vec<String>>,
    /// facekit version that wrote it.
    pub tool_version: String,
    /// The settings.
    pub config: TrainConfig,
    /// The datasets the run was started on (or last resumed on), to notice repacked data.
    #[serde(default)]
    pub datasets: Vec<DatasetIdentity>,
}

/// What identifies a dataset's content: its manifest lists every shard's size and CRC32, so the
/// manifest's SHA-256 changes with any repack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetIdentity {
    /// `train` or `valid`.
    pub role: String,
    /// The dataset (`training/celeb`).
    pub dataset: String,
    /// SHA-256 of its manifest file.
    pub manifest_sha256: String,
    /// Its record count.
    pub records: u64,
}

impl DatasetIdentity {
    /// The identity of an open dataset.
    pub fn of(role: &str, ds: &facekit_shard::Dataset) -> Result<Self> {
        use sha2::{Digest, Sha256};
        let m = ds.paths().manifest();
        let bytes = facekit_io::bounded::read(&m, facekit_io::bounded::MANIFEST)?;
        Ok(DatasetIdentity {
            role: role.into(),
            dataset: ds.paths().dir().join(ds.paths().name()).display().to_string(),
            manifest_sha256: Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect(),
            records: ds.len() as u64,
        })
    }

    /// How `now` differs from `saved` (empty when they agree, or when `saved` is empty: a run
    /// from before datasets were recorded).
    pub fn changes(saved: &[DatasetIdentity], now: &[DatasetIdentity]) -> Vec<String> {
        if saved.is_empty() {
            return Vec::new();
        }
        if saved.len() != now.len() || saved.iter().zip(now).any(|(a, b)| a.role != b.role) {
            return vec![format!("{} dataset(s) then, {} now", saved.len(), now.len())];
        }
        saved
            .iter()
            .zip(now)
            .filter(|(a, b)| a.manifest_sha256 != b.manifest_sha256)
            .map(|(a, b)| {
                format!(
                    "{} set {} was repacked or changed ({} records then, {} now)",
                    a.role, b.dataset, a.records, b.records
                )
            })
            .collect()
    }
}

impl SavedConfig {
    /// Reads `config.json` of a run folder.
    pub fn read(run: &RunPaths) -> Result<Self> {
        let path = run.config();
        let text = facekit_io::bounded::read(&path, facekit_io::bounded::STATE)?;
        serde_json::from_slice(&text)
            .with_context(|| format!("{} is not a valid facekit run configuration", path.display()))
    }

    /// Writes `config.json` atomically.
    pub fn write(&self, run: &RunPaths) -> Result<()> {
        Ok(facekit_io::durable::write_json(run.config(), self)?)
    }
}

/// `config.json` names the task as the command line does (`Fr`, `Gender`, `Age`, `Multi`), as it
/// always has; `net.json` uses [`Task`]'s own names. Both spellings are read.
mod task_name {
    use crate::model::Task;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Task, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match t {
            Task::Fr => "Fr",
            Task::Gender => "Gender",
            Task::Age => "Age",
            Task::Multi => "Multi",
        })
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Task, D::Error> {
        Task::deserialize(d)
    }
}
