//! `facekit train`: train a face network on packed shards (see docs/TRAINING.md).

use anyhow::Result;
use facekit_io::StopFlag;
use facekit_train::loss::MarginKind;
use facekit_train::model::{Arch, Task};
use facekit_train::run::paths::{RunPaths, BEST, LAST, MODEL_FILE};
use facekit_train::trainer::config::{MemoryFormatKind, OptimizerKind, PrecisionKind, ScheduleKind};
use facekit_train::{Outcome, Summary, TrainConfig};
use std::path::PathBuf;
use std::process::ExitCode;

/// The flags of `facekit train`, mapped once onto the library's [`TrainConfig`].
#[derive(Debug, Clone, clap::Args)]
pub struct TrainArgs {
    /// Task to train (case-insensitive): FR, Gender, Age or Multi.
    #[arg(value_enum, ignore_case = true)]
    pub task: Task,
    /// Training datasets (names in --data-dir, or paths); several are concatenated.
    #[arg(long = "train-sets", visible_alias = "train_sets", num_args = 1.., required_unless_present = "resume")]
    pub train_sets: Vec<String>,
    /// Validation datasets (names in --data-dir, or paths); several are concatenated.
    #[arg(long = "valid-sets", visible_alias = "valid_sets", num_args = 1..)]
    pub valid_sets: Vec<String>,
    /// Folder where bare dataset names are looked up.
    #[arg(long, default_value_os_t = d().data_dir)]
    pub data_dir: PathBuf,
    #[arg(long, value_enum, ignore_case = true, default_value_t = d().arch, help = arch_help())]
    pub arch: Arch,
    /// Input image side in pixels (records of another size are resized).
    #[arg(long, default_value_t = d().image_size)]
    pub image_size: u32,
    /// Embedding dimension.
    #[arg(long, default_value_t = d().embedding_size)]
    pub embedding_size: i64,
    /// Dropout probability before the embedding layer.
    #[arg(long, default_value_t = d().dropout)]
    pub dropout: f64,
    /// Start the last BN of every residual block at scale 0, so each block starts as its shortcut.
    #[arg(long)]
    pub zero_init_residual: bool,
    /// Start a new run from these weights: a .safetensors file (torchvision or insightface names) or a facekit run folder.
    #[arg(long, value_name = "PATH")]
    pub init: Option<PathBuf>,
    /// Images per micro-batch on each rank (a step sees batch x ranks x --accumulate images).
    #[arg(long, default_value_t = d().batch_size)]
    pub batch_size: usize,
    /// Micro-batches whose gradients are summed before each optimiser step (gradient accumulation).
    #[arg(long, value_name = "K", default_value_t = d().accumulate)]
    pub accumulate: u64,
    /// Partial FC: shard the ArcFace centres over the ranks, training on this fraction of each shard per step.
    #[arg(long, value_name = "SAMPLE_RATE")]
    pub partial_fc: Option<f64>,
    /// Train on N local processes (ranks) of this machine, one per GPU (on the CPU at most one per core); under torchrun, leave it out.
    #[arg(long, value_name = "N")]
    pub nproc_per_node: Option<usize>,
    /// Seconds a rank waits for the store or the others in a collective before the run stops with an error naming the late rank (1 to 2147483).
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    pub dist_timeout: u64,
    /// Backend of the ranks' collectives (auto: NCCL on CUDA, Gloo on the CPU).
    #[arg(long, value_enum, default_value_t = DistBackend::Auto)]
    pub dist_backend: DistBackend,
    /// Initial learning rate.
    #[arg(long, default_value_t = d().lr)]
    pub lr: f64,
    /// SGD momentum.
    #[arg(long, default_value_t = flag_default().momentum)]
    pub momentum: f64,
    /// Weight decay of every weight: SGD's L2 term, AdamW's decoupled p *= 1 − lr·wd.
    #[arg(long, default_value_t = flag_default().weight_decay)]
    pub weight_decay: f64,
    /// Learning-rate schedule.
    #[arg(long, value_enum, default_value_t = d().schedule.kind())]
    pub schedule: ScheduleKind,
    /// Plateau: steps without loss decrease before shrinking; step: steps between shrinks.
    #[arg(long, default_value_t = flag_default().plateau_steps)]
    pub plateau_steps: u64,
    /// Factor applied to the learning rate when it shrinks.
    #[arg(long, default_value_t = flag_default().lr_shrink)]
    pub lr_shrink: f64,
    /// Learning rate below which training stops (plateau) or where it ends (cosine).
    #[arg(long, default_value_t = flag_default().min_lr)]
    pub min_lr: f64,
    /// Steps of linear warm-up from 0 to --lr.
    #[arg(long, default_value_t = flag_default().warmup_steps, conflicts_with = "warmup_epochs")]
    pub warmup_steps: u64,
    /// Stop after this many steps in total [default: none].
    #[arg(long)]
    pub max_steps: Option<u64>,
    /// Stop after this many passes over the training sets [default: none].
    #[arg(long)]
    pub epochs: Option<u64>,
    /// ArcFace scale s.
    #[arg(long, default_value_t = flag_default().arcface_scale)]
    pub arcface_scale: f64,
    /// ArcFace additive angular margin m (radians).
    #[arg(long, default_value_t = flag_default().arcface_margin, conflicts_with = "margin_values")]
    pub arcface_margin: f64,
    /// Margin on the true class: arcface cos(θ+m2), cosface cos θ − m3, combined cos(m1·θ+m2) − m3.
    #[arg(long, value_enum, default_value_t = d().head.margin.kind())]
    pub margin: MarginKind,
    /// The margin's m1,m2,m3 (arcface_torch's margin_list) [default: arcface 1,--arcface-margin,0; cosface 1,0,0.4; combined: required].
    #[arg(long, value_name = "M1,M2,M3", value_delimiter = ',')]
    pub margin_values: Option<Vec<f64>>,
    /// Optimiser: sgd (--momentum, L2 --weight-decay) or adamw (--adam-betas, --adam-eps, decoupled --weight-decay).
    #[arg(long, value_enum, default_value_t = d().optimizer.kind())]
    pub optimizer: OptimizerKind,
    /// AdamW's β1,β2.
    #[arg(long, value_name = "B1,B2", value_delimiter = ',', default_value = super::train_config::ADAM_BETAS.as_str())]
    pub adam_betas: Vec<f64>,
    /// AdamW's ε.
    #[arg(long, value_name = "EPS", default_value_t = flag_default().adam_eps)]
    pub adam_eps: f64,
    /// Exponent of --schedule poly's decay (1: linear, arcface_torch's default).
    #[arg(long, value_name = "P", default_value_t = flag_default().poly_power)]
    pub poly_power: f64,
    /// Linear warm-up of E epochs, E x batches per epoch steps (arcface_torch's warmup_epoch).
    #[arg(long, value_name = "E", conflicts_with = "warmup_steps")]
    pub warmup_epochs: Option<u64>,
    /// Clip the network's gradients (not the ArcFace centres) to this global 2-norm [default: off; arcface_torch: 5].
    #[arg(long, value_name = "MAX")]
    pub clip_grad_norm: Option<f64>,
    /// Multi task: weights of the fr, gender and age losses.
    #[arg(long, value_delimiter = ',', num_args = 1..=3, default_values_t = flag_default().multi_weights.clone())]
    pub multi_weights: Vec<f64>,
    /// Backbone arithmetic (auto: fp16 on CUDA, fp32 on CPU); weights, heads, losses stay fp32.
    #[arg(long, value_enum, default_value_t = d().precision)]
    pub precision: PrecisionKind,
    /// Layout of images and conv weights (auto: channels-last on CUDA, contiguous on CPU).
    #[arg(long, value_enum, default_value_t = d().memory_format)]
    pub memory_format: MemoryFormatKind,
    /// Device: auto (CUDA when present), cpu, cuda or cuda:N.
    #[arg(long, default_value_t = d().device)]
    pub device: String,
    /// Do not mirror training images (by default half of them are, chosen per image and epoch).
    #[arg(long)]
    pub no_flip: bool,
    /// Random crop: keep a square of side uniform in [1-F, 1] of the chip, anywhere, resized back.
    #[arg(long, value_name = "F", default_value_t = d().random_crop)]
    pub random_crop: f32,
    /// Brightness and contrast jitter: each factor uniform in [1-F, 1+F].
    #[arg(long, value_name = "F", default_value_t = d().color_jitter)]
    pub color_jitter: f32,
    /// Probability of turning a training image grey.
    #[arg(long, value_name = "P", default_value_t = d().grey_prob)]
    pub grey_prob: f32,
    /// Threads decoding and augmenting images (0: all cores on CUDA, a quarter of them on the CPU).
    #[arg(long, default_value_t = d().workers)]
    pub workers: usize,
    /// libtorch's compute threads (0: the cores the decode workers leave, at least 1).
    #[arg(long, default_value_t = d().threads)]
    pub threads: usize,
    /// Seed of the data order, augmentation, initial weights and dropout.
    #[arg(long, default_value_t = d().seed)]
    pub seed: u64,
    /// Validate every N steps (0: only at the end).
    #[arg(long, default_value_t = d().valid_every)]
    pub valid_every: u64,
    /// insightface verification files scored during training (10-fold, flip test): lfw.bin cfp_fp.bin ...
    #[arg(long, num_args = 1.., value_name = "FILE")]
    pub eval_bin: Vec<PathBuf>,
    /// Score the --eval-bin files every N steps (0: only at the end).
    #[arg(long, value_name = "N", default_value_t = d().eval_every)]
    pub eval_every: u64,
    /// Images per forward pass when scoring --eval-bin files (0: twice --batch-size).
    #[arg(long, value_name = "N", default_value_t = d().eval_batch)]
    pub eval_batch: usize,
    /// Pick the best checkpoint by the accuracy on this --eval-bin set (its file stem, e.g. lfw) instead of validation.
    #[arg(long, value_name = "SET")]
    pub best_on: Option<String>,
    /// Write the `last` checkpoint every N steps (0: only at the end).
    #[arg(long, default_value_t = d().checkpoint_every)]
    pub checkpoint_every: u64,
    /// Folder holding one sub-folder per run.
    #[arg(long, default_value_os_t = d().model_dir)]
    pub model_dir: PathBuf,
    /// Name of this run's folder in --model-dir [default: TASK-UNIXTIME].
    #[arg(long)]
    pub run_name: Option<String>,
    /// Delete an existing run folder of the same name first (otherwise reusing a name is refused).
    #[arg(long, conflicts_with = "resume")]
    pub overwrite: bool,
    /// Continue the run RUN (a name in --model-dir, or its folder) from its `last` checkpoint.
    #[arg(long, value_name = "RUN")]
    pub resume: Option<String>,
    /// Skip corrupt records (counted and reported) instead of stopping.
    #[arg(long)]
    pub skip_corrupt: bool,
    /// With --resume: continue even though a dataset's manifest changed since the run started (repacked data).
    #[arg(long, requires = "resume")]
    pub allow_changed_data: bool,
    /// Print a progress line every N steps.
    #[arg(long, default_value_t = d().log_every)]
    pub log_every: u64,
    /// Allow --precision fp16 on the CPU (refused otherwise: ~100x slower than fp32 without AMX-FP16); for tests.
    #[arg(long)]
    pub allow_cpu_fp16: bool,
    /// Benchmarks: train on one random batch made once on the device, not the sets' records (times the step alone).
    #[arg(long)]
    pub synthetic: bool,
    /// Read settings from this TOML file (facekit's flag names, or arcface_torch's config keys; configs/ has presets); flags given here override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the resolved configuration as a config file (facekit's keys) and exit without training.
    #[arg(long)]
    pub print_config: bool,
    /// The flags given on this command line (filled by `run`, not a flag): a resume applies or refuses each.
    #[arg(skip)]
    pub given: Vec<String>,
}

/// Which c10d backend carries the collectives of a distributed run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DistBackend {
    /// NCCL on CUDA devices, Gloo on the CPU.
    Auto,
    /// Gloo (CPU tensors; any machine).
    Gloo,
    /// NCCL (one GPU per rank; needs a build with the `nccl` feature).
    Nccl,
}

/// The library's defaults, which the flags show and take.
fn d() -> TrainConfig {
    TrainConfig::default()
}

/// The defaults of the values inside the library's sections, which the flags show and take.
fn flag_default() -> &'static super::train_config::FlagDefaults {
    &super::train_config::FLAG_DEFAULTS
}

/// `--arch`'s help, with insightface's short names (`r50`, ..., `r200`, `mbf`), which clap
/// accepts as aliases but would not show.
fn arch_help() -> String {
    use clap::ValueEnum;
    let aliases: Vec<String> = Arch::value_variants()
        .iter()
        .filter_map(|a| a.to_possible_value())
        .filter_map(|v| {
            let names: Vec<&str> = v.get_name_and_aliases().collect();
            (names.len() > 1).then(|| format!("{} for {}", names[1..].join(", "), names[0]))
        })
        .collect();
    format!("Network architecture, case-insensitive (also {})", aliases.join("; "))
}

/// Trains. Exit codes: 0 finished; 1 the loss diverged or the data is corrupt; 2 a usage or I/O
/// error; 128 + N when signal N stopped it after saving `last` (130 Ctrl-C, 143 SIGTERM, 129
/// SIGHUP): continue with `--resume`.
pub fn run(mut args: TrainArgs) -> Result<ExitCode> {
    args.given = given_flags();
    if args.print_config {
        let cfg = args.into_config()?;
        cfg.validate()?;
        outln!("{}", super::config_file::print(&cfg)?.trim_end());
        return Ok(ExitCode::SUCCESS);
    }
    check_run_folder(&args)?;
    if let Some(n) = args.nproc_per_node {
        return super::train_dist::launch(n, &args);
    }
    let command_line: Vec<String> = std::env::args().collect();
    // Finish the step in hand and save it, instead of dying mid-write.
    let stop = StopFlag::from_signals()?;
    if let Some(env) = facekit_train::dist::DistEnv::from_env()? {
        return super::train_dist::rank(env, args, command_line, stop);
    }
    let cfg = args.into_config()?;
    let outcome = facekit_train::train(cfg, command_line, stop.clone(), super::train_events::observer())?;
    Ok(report(outcome, &stop, true))
}

/// Benchmarks' `FACEKIT_CUDA_SYNC_DEBUG_AFTER=N` (scripts/bench-gpu.sh, docs/TRAINING.md "Feeding
/// a GPU"), read here so that the library reads no environment
/// ([`facekit_train::TrainConfig::sync_watch_after`]).
pub(crate) fn sync_watch_after() -> Result<Option<u64>> {
    match std::env::var("FACEKIT_CUDA_SYNC_DEBUG_AFTER") {
        Ok(v) => v
            .parse()
            .map(Some)
            .map_err(|_| anyhow::anyhow!("FACEKIT_CUDA_SYNC_DEBUG_AFTER={v:?} is not a number of warm-up steps")),
        Err(_) => Ok(None),
    }
}

/// Refuses, before any work, a new run folder inside another run folder or among a dataset's
/// files ([`super::output_check`]); a run given no name gets a fresh one, which any name stands for.
fn check_run_folder(args: &TrainArgs) -> Result<()> {
    if args.resume.is_some() {
        return Ok(());
    }
    let name = args.run_name.as_deref().unwrap_or(".new-run");
    Ok(super::output_check().owned(&args.model_dir.join(name))?)
}

/// The `facekit train` settings this process's command line gives explicitly, a `--config` file's included (their field names,
/// which are `TrainConfig`'s): a resumed run applies or refuses each of them and keeps its saved
/// value for every other one, so that a default is never mistaken for a choice. clap knows where
/// each value came from; the arguments are parsed again to ask it (`main` parsed them once already,
/// so this cannot fail).
fn given_flags() -> Vec<String> {
    use clap::parser::ValueSource;
    use clap::CommandFactory;
    let Ok(args) = super::args() else { return Vec::new() };
    let Ok(matches) = super::Cli::command().try_get_matches_from(args) else { return Vec::new() };
    let Some(("train", m)) = matches.subcommand() else { return Vec::new() };
    m.ids()
        .filter(|id| m.value_source(id.as_str()) == Some(ValueSource::CommandLine))
        .map(|id| id.to_string())
        .collect()
}

/// Prints how the run ended (the summary, or what went wrong and where to continue from) and
/// returns the exit code that says it; `writer`: this process wrote the run (rank 0), the other
/// ranks print only what concerns them alone (a corrupt record in their share).
pub fn report(outcome: Outcome, stop: &StopFlag, writer: bool) -> ExitCode {
    match outcome {
        Outcome::Finished(s) => {
            if writer {
                print_summary("finished", &s);
            }
            ExitCode::SUCCESS
        }
        Outcome::Interrupted(s) => {
            if writer {
                print_summary(
                    &format!("stopped by {}; `last` holds every step, continue with --resume", stop.describe()),
                    &s,
                );
            }
            // Another rank's stop request ends this one too, whatever signal (if any) it got.
            ExitCode::from(if stop.is_set() { stop.exit_code() } else { 130 })
        }
        Outcome::NothingLeft { reason, .. } => {
            if writer {
                say(&format!("facekit train: {reason}"));
            }
            ExitCode::SUCCESS
        }
        Outcome::Diverged { .. } if !writer => ExitCode::from(1),
        Outcome::Diverged { step, cause, summary } => {
            say(&format!(
                "facekit train: error: {cause} at step {step}; stopped without saving that step. {} \
                 Try a lower --lr or more --warmup-steps.",
                last_checkpoint(&summary)
            ));
            ExitCode::from(1)
        }
        Outcome::CorruptData { message, summary } => {
            say(&format!(
                "facekit train: error: corrupt training data: {message}\n  \
                 (verify it with `facekit verify-shard`, or skip such records with --skip-corrupt.) {}",
                last_checkpoint(&summary)
            ));
            ExitCode::from(1)
        }
    }
}

/// A line on stderr that a closed stderr cannot turn into a panic ([`facekit_io::console`]).
fn say(line: &str) {
    facekit_io::console::line(line);
}

/// Names the checkpoint a user can continue from, only if one was really written.
fn last_checkpoint(s: &Summary) -> String {
    match s.last_checkpoint {
        Some(step) => format!(
            "The last good checkpoint is {} (step {step}).",
            RunPaths::new(&s.run_dir).checkpoint(LAST).display()
        ),
        None => "No checkpoint had been written yet (the first comes after --checkpoint-every steps).".into(),
    }
}

/// The end-of-run summary on stdout; a closed stdout (`| head`) is ignored, as the run is over
/// and its files hold everything.
fn print_summary(how: &str, s: &Summary) {
    let out = facekit_io::console::out;
    out(&format!("Training {how}."));
    out(&format!("  steps:            {}", s.steps));
    match s.final_loss {
        Some(l) => out(&format!("  final loss:       {l:.4}")),
        None => out("  final loss:       - (no step run)"),
    }
    match &s.best {
        Some(b) => out(&format!("  best {}: {:.4} (step {})", b.name, b.value, b.step)),
        None => out("  best metric:      - (no validation)"),
    }
    out(&format!(
        "  throughput:       {:.1} images/s (validation and --eval-bin scoring left out)",
        s.images_per_second
    ));
    out(&format!("  data wait:        {:.1} ms/step", s.mean_data_wait_ms));
    out(&format!("  skipped corrupt:  {}", s.skipped_corrupt));
    if let Some(l) = &s.loss_scaling {
        out(&format!("  loss scale:       {} ({} steps skipped for inf/NaN gradients)", l.scale, l.skipped_steps));
    }
    out(&format!("  run folder:       {}", s.run_dir.display()));
    let run = RunPaths::new(&s.run_dir);
    let weights = match (s.last_checkpoint.is_some(), s.has_best) {
        (true, true) => run.checkpoint(&format!("{{{LAST},{BEST}}}")).join(MODEL_FILE).display().to_string(),
        (true, false) => run.checkpoint(LAST).join(MODEL_FILE).display().to_string(),
        (false, true) => run.checkpoint(BEST).join(MODEL_FILE).display().to_string(),
        (false, false) => "- (no checkpoint written)".into(),
    };
    out(&format!("    weights:        {weights}"));
    out(&format!("    logs:           {}, {}", run.log().display(), run.losses().display()));
    out(&format!("    curves:         {}", run.curves().display()));
    out(&format!("    tensorboard:    {} (tensorboard --logdir)", run.tensorboard().display()));
}
