//! The full configuration of a training run, as a tree: the run's own settings, and sections
//! whose enum variants carry their own parameters ([`OptimizerConfig`], [`ScheduleConfig`],
//! [`Warmup`], the loss's [`HeadConfig`]), so that a combination that means nothing (AdamW's betas
//! on an SGD run, a warm-up in steps and in epochs) cannot be written. The command line maps its
//! flags onto it once (`src/cli/train.rs`); `config.json` stores it ([`SavedConfig`]), and run
//! folders written with the flat configuration of earlier versions still load ([`legacy`]).
//!
//! - [`optimization`]: the optimiser, the schedule and the warm-up;
//! - [`settings`]: the configuration as a list of settings named by their flags (what a resume
//!   compares and what ranks compare with each other);
//! - [`resume`]: what a resumed run takes from its new command line;
//! - [`saved`]: `config.json` and the datasets' identities;
//! - [`legacy`]: the flat `config.json` of earlier versions, read into the tree.

pub(crate) mod legacy;
pub(crate) mod optimization;
pub mod resume;
pub mod saved;
pub mod settings;

pub use crate::loss::{HeadConfig, Margin, TaskWeights};
pub use optimization::{OptimizerConfig, OptimizerKind, ScheduleConfig, ScheduleKind, Warmup};
pub use resume::RESUME_APPLIES;
pub use saved::{DatasetIdentity, SavedConfig};

use crate::model::{Arch, Task};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

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
/// command line maps its flags onto it; their help is in `facekit train -h`). The network's
/// settings are flat here and [`crate::model::NetConfig`] in `net.json`; how the weights move
/// and the loss on the embedding are sections of their own.
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
    /// Initial learning rate (after the warm-up; the schedule moves it from there).
    pub lr: f64,
    /// The optimiser and its settings.
    pub optimizer: OptimizerConfig,
    /// The learning-rate schedule and its settings.
    pub schedule: ScheduleConfig,
    /// The linear warm-up from 0 to `lr`.
    pub warmup: Warmup,
    /// Stop after this many steps in total [default: none].
    pub max_steps: Option<u64>,
    /// Stop after this many passes over the training sets [default: none].
    pub epochs: Option<u64>,
    /// The loss on the embedding: the identity head's scale, margin and Partial FC, the tasks' weights.
    pub head: HeadConfig,
    /// Clip the network's gradients (not the ArcFace centres) to this global 2-norm [default: off].
    #[serde(default)]
    pub clip_grad_norm: Option<f64>,
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
    /// The flags the command line gave explicitly (their ids, as `log_every` or `adam_betas`): a
    /// resumed run applies or refuses each of them and keeps its saved value for every other one.
    /// A setting that differs from [`TrainConfig::default`] counts as given too. Not saved.
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
            lr: 0.1,
            optimizer: OptimizerConfig::default(),
            schedule: ScheduleConfig::default(),
            warmup: Warmup::default(),
            max_steps: None,
            epochs: None,
            head: HeadConfig::default(),
            clip_grad_norm: None,
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
        finite("--dropout", self.dropout, (0.0..1.0).contains(&self.dropout), "in [0, 1)")?;
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
        self.validate_optimisation()?;
        self.validate_parallel()
    }

    /// The optimiser, the schedule, clipping and the loss's head.
    fn validate_optimisation(&self) -> Result<()> {
        self.optimizer.validate()?;
        self.schedule.validate(self.lr)?;
        if self.schedule.needs_length() && self.max_steps.is_none() && self.epochs.is_none() {
            bail!("--schedule {} needs --max-steps or --epochs (the length of the decay)", self.schedule.kind().name());
        }
        if let Some(c) = self.clip_grad_norm {
            if !(c.is_finite() && c > 0.0) {
                bail!("--clip-grad-norm must be a positive number, got {c}");
            }
        }
        self.head.validate(self.task)
    }

    /// Gradient accumulation, the world size and Partial FC.
    fn validate_parallel(&self) -> Result<()> {
        if !(1..=1024).contains(&self.accumulate) {
            bail!("--accumulate must be between 1 and 1024 micro-batches, got {}", self.accumulate);
        }
        if self.world_size == 0 {
            bail!("the world size must be at least 1");
        }
        Ok(())
    }

    /// Images per optimiser step over all ranks.
    pub(crate) fn global_batch(&self) -> usize {
        self.batch_size * self.world_size * self.accumulate as usize
    }

    /// This configuration on `world` ranks with the same global batch: the per-rank batch scales
    /// by `world_size / world` (an error when it does not divide).
    pub(crate) fn on_world(mut self, world: usize) -> Result<Self> {
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
    pub(crate) fn eval_bin_names(&self) -> Vec<String> {
        self.eval_bin.iter().map(|p| crate::embedding::bins::bin_name(p)).collect()
    }

    /// Images per forward pass of `--eval-bin` scoring: `--eval-batch`, or twice `--batch-size`
    /// (no gradients or activations are kept, so inference fits about twice the training batch).
    pub(crate) fn eval_batch_size(&self) -> usize {
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

/// One micro-batch per step: the default of `accumulate`, absent from older `config.json`.
fn one() -> u64 {
    1
}

/// One rank: the default of `world_size`, absent from older `config.json`.
fn one_rank() -> usize {
    1
}

/// arcface_torch's verification interval (`verbose = 2000`).
fn default_eval_every() -> u64 {
    2000
}

/// `config.json` names the task as the command line does (`Fr`, `Gender`, `Age`, `Multi`), as it
/// always has; `net.json` uses [`Task`]'s own names. Both spellings are read.
mod task_name {
    use crate::model::Task;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(t: &Task, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match t {
            Task::Fr => "Fr",
            Task::Gender => "Gender",
            Task::Age => "Age",
            Task::Multi => "Multi",
        })
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Task, D::Error> {
        Task::deserialize(d)
    }
}
