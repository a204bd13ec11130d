//! Everything before the first step: the run folder (locked, cleaned), the configuration (merged
//! on resume), the data (opened and checked), the device and threads, the network, optimiser,
//! loss scaler, schedule and state (fresh or from `last`), and the files a run starts with.
//!
//! Nothing in a run folder is deleted, and no folder is left behind, until the whole
//! configuration holds and the data is open.

use super::adamw::AdamW;
use super::checkpoint;
use super::checkpoint::Shards;
use super::config::{
    DatasetIdentity, OptimizerConfig, PrecisionKind, SavedConfig, ScheduleConfig, TrainConfig, Warmup,
};
use super::eval_bins::EvalBins;
use super::feed::{self, Input, TrainerAlloc};
use super::host_reads::HostReads;
use super::labels::LabelGuard;
use super::logs::RunLogs;
use super::meter::Meter;
use super::optim::{Optimizer, Sgd};
use super::pending::Pending;
use super::replicas::Replicas;
use super::run::Trainer;
use super::run_dir::RunDir;
use super::scaler::{GradScaler, ScalerConfig};
use super::schedule::{Cosine, DlibPlateau, Poly, Schedule, StepSchedule};
use super::shards::{HeadShards, HEAD_WEIGHT};
use super::state::{ScalerState, TrainState};
use crate::events::{Event, Observer};
use crate::loss::FaceLoss;
use crate::model::init::Pretrained;
use crate::model::{FaceNet, NetConfig, Task};
use crate::run::numerics::Numerics;
use crate::run::paths::LAST;
use anyhow::{bail, Context, Result};
use facekit_data::{Augment, Loader, LoaderConfig};
use facekit_io::StopFlag;
use facekit_shard::Dataset;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use tch::nn::VarStore;
use tch::Device;

impl Trainer {
    /// Prepares the run `cfg` describes (a new one, or `--resume`); `command_line` is recorded in
    /// `config.json`; `stop` ends the run after the step in which it is set; `replicas` are the
    /// processes training together ([`super::replicas::SingleProcess`] for one); `events` hears
    /// what setup and the loop have to say (this crate prints nothing).
    ///
    /// Its steps run in this order because nothing in a run folder may change until every flag
    /// holds and the data is open, and because the initial weights are drawn from the seed in one
    /// fixed sequence.
    pub fn new(
        cfg: TrainConfig,
        command_line: Vec<String>,
        stop: StopFlag,
        mut replicas: Box<dyn Replicas>,
        events: Observer,
    ) -> Result<Trainer> {
        let (rank0, world) = (replicas.rank() == 0, replicas.world_size());
        let cfg = check_flags(cfg, world)?;
        // --init is read and matched against this network before any folder exists.
        let pretrained = cfg.init.as_deref().map(|path| read_init(&cfg, path, &events)).transpose()?;
        let early_bins = open_new_bins(&cfg, rank0, &events)?;
        let (cfg, run, resume_from) = prepare_run(cfg, replicas.rank(), world, &events)?;
        let (run, data) = open_data(&cfg, run, resume_from.is_some(), replicas.as_ref(), early_bins, &events)?;
        clear_for_overwrite(&cfg, &run, rank0)?;
        let mut model =
            Model::build(&cfg, data.device, data.loader.num_classes(), replicas.as_ref(), pretrained.as_ref())?;
        let state = restore_or_start(&cfg, &run, resume_from.as_deref(), &mut model, &events)?;
        // Every rank starts from rank 0's weights (drawn from the same seed anyway, but a resumed
        // or --init run must not depend on every rank having read the same files).
        replicas.attach(&model.vs, &model.local, model.net_cfg.task == Task::Multi)?;
        let (scaler, state) = loss_scaler(&model.numerics, state);
        let schedule = plan_schedule(&cfg, &data.length, resume_from.as_deref(), &state)?;
        let nothing_left =
            resume_from.as_ref().and_then(|_| nothing_left(&cfg, &data.length, state.step, &schedule, run.root()));
        // A resume with nothing left to train says nothing and changes nothing in the run folder.
        let starting = rank0 && nothing_left.is_none();
        if starting {
            announce(&cfg, &model, data.device, world, &events);
        }
        let Data { loader, valid, datasets, length, bins, .. } = data;
        let files = RunFiles { cfg: &cfg, run: &run, net_cfg: &model.net_cfg, resuming: resume_from.is_some() };
        let logs =
            starting.then(|| files.write(command_line, datasets, pretrained.as_ref(), &state, &events)).transpose()?;
        if rank0 {
            events.emit(Event::Begin { step: state.step, max_steps: length.max_steps });
        }
        let Model { numerics, feed, net_cfg, vs, net, loss, shards, opt, .. } = model;
        Ok(Trainer {
            guard: LabelGuard::new(net_cfg.task),
            last_checkpoint: resume_from.as_ref().map(|_| state.step),
            seconds_before: state.train_seconds,
            inject_nan: None,
            cfg,
            run,
            net_cfg,
            vs,
            net,
            loss,
            opt,
            numerics,
            feed,
            scaler,
            schedule,
            state,
            loader,
            valid,
            bins,
            logs,
            meter: Meter::new(),
            stop,
            stopping: false,
            nothing_left,
            replicas,
            shards,
            events,
            max_steps: length.max_steps,
            batches_per_epoch: length.batches_per_epoch,
            final_loss: None,
            grad_norm: None,
            host_reads: HostReads::default(),
            pending: Pending::default(),
            last_losses: None,
            read_every: 1,
            valid_skipped: 0,
            train_mode: true,
        })
    }
}

/// Every flag is checked before any folder is touched, so that a typo costs nothing.
fn check_flags(cfg: TrainConfig, world: usize) -> Result<TrainConfig> {
    // A new run records its world size; a resumed one takes its saved one, rescaled later.
    let cfg = TrainConfig { world_size: world, ..cfg };
    cfg.validate()?;
    if let (Some(init), Some(run)) = (&cfg.init, &cfg.resume) {
        bail!("--init {} with --resume {run}: a resumed run continues from its own checkpoint; --init only starts new runs", init.display());
    }
    Ok(cfg)
}

/// A new run's verification files are read and decoded before its folder is created, so that a
/// bad file leaves nothing behind (a resumed run's come from its config.json, read under the lock
/// in [`open_data`]). Only rank 0 evaluates: the other ranks only check that the files parse.
fn open_new_bins(cfg: &TrainConfig, rank0: bool, events: &Observer) -> Result<Option<Option<EvalBins>>> {
    match cfg.resume {
        None => Ok(Some(EvalBins::open(cfg, rank0, events)?)),
        Some(_) => Ok(None),
    }
}

/// What a run needs before its folder may be changed: the device, both loaders (every dataset
/// opened and checked), the datasets' identities (compared with the saved ones on resume), the
/// run's length and its `--eval-bin` sets.
struct Data {
    device: Device,
    loader: Loader,
    valid: Option<Loader>,
    datasets: Vec<DatasetIdentity>,
    length: Length,
    bins: Option<EvalBins>,
}

/// Opens everything the run reads, and abandons the run folder (removing it when this run created
/// it) when anything fails: a run that cannot start leaves no folder behind.
fn open_data(
    cfg: &TrainConfig,
    run: RunDir,
    resuming: bool,
    replicas: &dyn Replicas,
    early_bins: Option<Option<EvalBins>>,
    events: &Observer,
) -> Result<(RunDir, Data)> {
    let opened = cfg.validate().and_then(|()| open_run(cfg, resuming, &run, replicas, events)).and_then(|o| {
        // Ranks that would train different models stop here, all naming what differs.
        crate::dist::agree::same_run(replicas, cfg, &o.datasets, o.device)?;
        let length = Length::plan(cfg, &o.loader)?;
        let bins = match early_bins {
            Some(b) => b,
            None => EvalBins::open(cfg, replicas.rank() == 0, events)?,
        };
        let Opened { device, loader, valid, datasets } = o;
        Ok(Data { device, loader, valid, datasets, length, bins })
    });
    match opened {
        Ok(data) => Ok((run, data)),
        Err(e) => {
            run.abandon();
            Err(e)
        }
    }
}

/// `--overwrite` empties an existing folder only now that the run is known to start.
fn clear_for_overwrite(cfg: &TrainConfig, run: &RunDir, rank0: bool) -> Result<()> {
    if cfg.overwrite && !run.created() && rank0 {
        run.clear()?;
    }
    Ok(())
}

/// The network and what trains it.
struct Model {
    numerics: Numerics,
    feed: Box<dyn Input>,
    net_cfg: NetConfig,
    vs: VarStore,
    net: FaceNet,
    loss: FaceLoss,
    /// The variables each rank holds only some rows of (Partial FC), gathered for checkpoints.
    shards: Option<Box<dyn Shards>>,
    /// The names of those variables, which stay out of the gradient averaging.
    local: Vec<String>,
    opt: Box<dyn Optimizer>,
}

impl Model {
    /// Builds the model in one fixed order, because the initial weights are a function of the
    /// seed only if they are drawn in the same sequence every time.
    fn build(
        cfg: &TrainConfig,
        device: Device,
        classes: u32,
        replicas: &dyn Replicas,
        pretrained: Option<&Pretrained>,
    ) -> Result<Model> {
        let numerics = Numerics::new(device, cfg.precision, cfg.memory_format);
        let feed = make_feed(&numerics, cfg, classes)?;
        tch::manual_seed(cfg.seed as i64);
        let net_cfg = net_config(cfg, classes)?;
        let vs = VarStore::new(device);
        let net = FaceNet::new(&vs.root(), &net_cfg)?;
        // Partial FC's centres are sharded over the ranks' group; checkpoints store them whole.
        let head_group = cfg.head.partial_fc.map(|_| replicas.group().map(Rc::new)).transpose()?;
        let loss = match &head_group {
            Some(group) => FaceLoss::with_partial_fc(&vs.root(), &net_cfg, &cfg.head, group.clone(), cfg.seed)?,
            None => FaceLoss::new(&vs.root(), &net_cfg, &cfg.head)?,
        };
        let shards: Option<Box<dyn Shards>> =
            head_group.map(|g| Box::new(HeadShards::new(g, net_cfg.num_classes)) as Box<dyn Shards>);
        let local: Vec<String> = if shards.is_some() { vec![HEAD_WEIGHT.to_string()] } else { Vec::new() };
        // Into the fp32 variables themselves, before their layout changes and the optimiser sees them.
        if let Some(p) = pretrained {
            p.copy_into(&vs)?;
        }
        // Before the optimiser exists, so that its momentum buffers are born in the same layout.
        numerics.memory_format.apply_to_vars(&vs);
        let opt = build_optimizer(cfg, &vs);
        Ok(Model { numerics, feed, net_cfg, vs, net, loss, shards, local, opt })
    }
}

/// A resumed run continues exactly where its `last` checkpoint stopped (weights, optimiser,
/// position); a new one starts at step 0.
fn restore_or_start(
    cfg: &TrainConfig,
    run: &RunDir,
    resume_from: Option<&Path>,
    model: &mut Model,
    events: &Observer,
) -> Result<TrainState> {
    let Some(dir) = resume_from else { return Ok(TrainState::start(cfg)) };
    let state = checkpoint::load(dir, &mut model.vs, model.opt.as_mut(), model.shards.as_deref())?;
    // Loading copies into the existing variables, which keeps their layout; this only guarantees it.
    model.numerics.memory_format.apply_to_vars(&model.vs);
    events.emit(Event::Resuming { run: run.root(), step: state.step, epoch: state.epoch, batch: state.batch_in_epoch });
    Ok(state)
}

/// fp16 needs a loss scaler: a run resumed in fp16 continues with its saved scale, one that
/// switched to fp16 starts afresh; the state says what the loop knows of it until its first read
/// point reads it back.
fn loss_scaler(numerics: &Numerics, state: TrainState) -> (Option<GradScaler>, TrainState) {
    let device = numerics.device;
    let scaler = numerics.needs_loss_scaling().then(|| match &state.scaler {
        Some(saved) => GradScaler::from_state(ScalerConfig::default(), saved, device),
        None => GradScaler::new(ScalerConfig::default(), device),
    });
    let mut state = state;
    state.scaler = scaler.as_ref().map(|_| {
        state.scaler.clone().unwrap_or_else(|| ScalerState::from_values(&[ScalerConfig::default().init_scale]))
    });
    (scaler, state)
}

/// Rank 0 tells where and how the run computes, so that a log shows what each run was.
fn announce(cfg: &TrainConfig, model: &Model, device: Device, world: usize, events: &Observer) {
    events.emit(Event::Device { device: &device_name(device), numerics: &model.numerics.describe() });
    events.emit(Event::Batch {
        per_rank: cfg.batch_size,
        ranks: cfg.world_size,
        accumulate: cfg.accumulate,
        global: cfg.global_batch(),
    });
    if let Some(p) = &model.loss.partial {
        events.emit(Event::PartialFc {
            sample_rate: p.config().sample_rate,
            classes: model.net_cfg.num_classes,
            ranks: world,
            on_rank0: p.num_local(),
            head_bytes: p.memory_bytes(cfg.optimizer.parameter_copies() - 2),
        });
    }
}

/// How long a run is, in steps of `--accumulate` micro-batches.
struct Length {
    /// Micro-batches per epoch that make whole steps (a multiple of `--accumulate`).
    batches_per_epoch: u64,
    /// The step limit of `--max-steps` and `--epochs` (the smaller); `None`: the schedule decides.
    max_steps: Option<u64>,
    /// Steps of linear warm-up (`--warmup-steps`, or `--warmup-epochs` in steps).
    warmup_steps: u64,
}

impl Length {
    /// The run's length on `loader`'s data. A run without a whole step per epoch, or whose warm-up
    /// lasts as long as the run itself (it would train at a rate still ramping up from 0 to its
    /// end and never reach `--lr`), is refused.
    fn plan(cfg: &TrainConfig, loader: &Loader) -> Result<Length> {
        // Whole steps only: the micro-batches of an epoch that do not fill a step are left out.
        let batches_per_epoch = loader.batches_per_epoch() / cfg.accumulate * cfg.accumulate;
        if batches_per_epoch == 0 {
            bail!(
                "an epoch of {} batch(es) per rank gives no step of --accumulate {} micro-batches: lower --accumulate or --batch-size",
                loader.batches_per_epoch(),
                cfg.accumulate
            );
        }
        let steps_per_epoch = batches_per_epoch / cfg.accumulate;
        let max_steps = match (cfg.max_steps, cfg.epochs) {
            (Some(s), Some(e)) => Some(s.min(e * steps_per_epoch)),
            (s, e) => s.or(e.map(|e| e * steps_per_epoch)),
        };
        let warmup_steps = cfg.warmup.steps(steps_per_epoch);
        if let Some(total) = max_steps.filter(|&t| warmup_steps > 0 && warmup_steps >= t) {
            let warmup = match cfg.warmup {
                Warmup::Epochs(e) => {
                    format!("--warmup-epochs {e} ({warmup_steps} steps of {steps_per_epoch} per epoch)")
                }
                Warmup::Steps(_) => format!("--warmup-steps {warmup_steps}"),
            };
            bail!(
                "{warmup} is as long as the run ({total} steps) or longer: the learning rate would still be ramping up from 0 \
                 when the run ends and never reach --lr {}. Give a shorter warm-up or a longer run",
                cfg.lr
            );
        }
        Ok(Length { batches_per_epoch, max_steps, warmup_steps })
    }
}

/// The learning-rate schedule of a new run, or of a resumed one at the progress its checkpoint
/// saved. A resumed schedule with a horizon (step milestones, cosine, poly) is rebuilt for the
/// run's present length, so `--resume RUN --max-steps N` continues as a run planned for N steps
/// would, instead of at the rate a finished run ended with (0 for poly).
fn plan_schedule(
    cfg: &TrainConfig,
    length: &Length,
    resume_from: Option<&Path>,
    state: &TrainState,
) -> Result<Schedule> {
    let planned =
        build_schedule(&TrainConfig { warmup: Warmup::Steps(length.warmup_steps), ..cfg.clone() }, length.max_steps);
    let Some(dir) = resume_from else { return Ok(planned) };
    let saved = serde_json::from_value::<Schedule>(state.schedule.clone())
        .with_context(|| format!("{}: the schedule state in state.json is not valid", dir.display()))?;
    Ok(planned.resumed_from(saved))
}

/// Why a resumed run has nothing left to train, and what to do to train it further; `None` when
/// it has steps left.
fn nothing_left(cfg: &TrainConfig, length: &Length, step: u64, schedule: &Schedule, run: &Path) -> Option<String> {
    if let Some(total) = length.max_steps.filter(|&t| step >= t) {
        let limit = match (cfg.max_steps, cfg.epochs) {
            (Some(m), _) if m == total => format!("--max-steps {m}"),
            (_, Some(e)) => format!("--epochs {e} ({total} steps)"),
            _ => format!("{total} steps"),
        };
        return Some(format!(
            "run {} already reached step {step}, the end of its {limit}: there is nothing left to train. To train it further, \
             resume it with a larger --max-steps or --epochs (a poly or cosine schedule then stretches its decay to the new length)",
            run.display()
        ));
    }
    schedule.stopped().then(|| {
        format!(
            "run {} already ended at step {step}: its learning rate fell below --min-lr {}, which ends a plateau schedule, so there \
             is nothing left to train. To train it further, start a new run from its weights (--init {})",
            run.display(),
            cfg.schedule.min_lr().unwrap_or(0.0),
            run.display()
        )
    })
}

/// Where rank 0's files of a starting or resumed run go, and what they describe.
struct RunFiles<'a> {
    cfg: &'a TrainConfig,
    run: &'a RunDir,
    net_cfg: &'a NetConfig,
    resuming: bool,
}

impl RunFiles<'_> {
    /// Writes `config.json` (with this command line), `net.json` and `init.json`, and opens the
    /// logs, so that a run folder always says what trained in it and how to rebuild the network.
    fn write(
        &self,
        command_line: Vec<String>,
        datasets: Vec<DatasetIdentity>,
        pretrained: Option<&Pretrained>,
        state: &TrainState,
        events: &Observer,
    ) -> Result<RunLogs> {
        let RunFiles { cfg, run, net_cfg, resuming } = *self;
        let saved = if resuming {
            let mut saved = SavedConfig::read(run)?;
            saved.resumed_with.push(command_line);
            saved.config = cfg.clone();
            saved.datasets = datasets;
            saved
        } else {
            SavedConfig {
                command_line,
                resumed_with: Vec::new(),
                tool_version: env!("CARGO_PKG_VERSION").into(),
                config: cfg.clone(),
                datasets,
            }
        };
        saved.write(run)?;
        facekit_io::durable::write_json(run.net(), net_cfg)?;
        if let Some(p) = pretrained {
            facekit_io::durable::write_json(run.init_report(), &p.report)?;
            events.emit(Event::Init { summary: &p.report.summary() });
        }
        RunLogs::open(run.paths(), state.step)
    }
}

/// The run folder, locked, and the configuration to use; for `--resume`, the saved configuration
/// with the settings this command line gives that may change mid-run ([`TrainConfig::resumed`]:
/// the others must match), on `world` ranks with the global batch it had, and the checkpoint to
/// continue from. Nothing is deleted here but temporary files an interrupted run left (stale for
/// certain once the lock is held). Only rank `0` locks, creates or cleans the folder; the other
/// ranks read what they need from it.
fn prepare_run(
    cfg: TrainConfig,
    rank: usize,
    world: usize,
    events: &Observer,
) -> Result<(TrainConfig, RunDir, Option<PathBuf>)> {
    let open =
        |root: &Path, create: bool| if rank == 0 { RunDir::lock(root, create) } else { Ok(RunDir::follow(root)) };
    let Some(resume) = cfg.resume.clone() else {
        let run = open(&cfg.model_dir.join(cfg.run_name()), true)?;
        if rank == 0 {
            remove_stale(&run, events)?;
            if !cfg.overwrite && run.existing_checkpoint(LAST).is_some() {
                bail!("run folder {} already holds a run: continue it with --resume, or choose another --run-name, or --overwrite", run.root().display());
            }
        }
        return Ok((cfg, run, None));
    };
    let root = [PathBuf::from(&resume), cfg.model_dir.join(&resume)]
        .into_iter()
        .find(|d| crate::run::paths::RunPaths::new(d).config().is_file())
        .with_context(|| {
            format!(
                "no run '{resume}': neither {resume}/config.json nor {}/config.json exists",
                cfg.model_dir.join(&resume).display()
            )
        })?;
    let run = open(&root, false)?;
    if rank == 0 {
        remove_stale(&run, events)?;
    }
    let saved = SavedConfig::read(&run)?;
    let ckpt = run
        .existing_checkpoint(LAST)
        .with_context(|| format!("run {} has no checkpoint to resume from (checkpoints/last)", root.display()))?;
    let saved =
        saved.config.on_world(world).with_context(|| format!("cannot resume {} on {world} rank(s)", root.display()))?;
    let (merged, changed) = cfg.resumed(&saved).with_context(|| format!("--resume {resume}"))?;
    if rank == 0 && !changed.is_empty() {
        events.emit(Event::ResumingWith { changed: &changed });
    }
    Ok((merged, run, Some(ckpt)))
}

/// Temporary files an interrupted run left are stale for certain once the lock is held.
fn remove_stale(run: &RunDir, events: &Observer) -> Result<()> {
    let count = run.remove_stale()?;
    if count > 0 {
        events.emit(Event::RemovedTemps { count, run: run.root() });
    }
    Ok(())
}

/// The device, both loaders (every dataset opened and checked) and the datasets' identities,
/// compared with the saved ones on resume.
struct Opened {
    device: Device,
    loader: Loader,
    valid: Option<Loader>,
    datasets: Vec<DatasetIdentity>,
}

fn open_run(
    cfg: &TrainConfig,
    resuming: bool,
    run: &RunDir,
    replicas: &dyn Replicas,
    events: &Observer,
) -> Result<Opened> {
    let device = parse_device(&cfg.device)?;
    check_precision(cfg, device)?;
    // Ranks on one machine share its cores (LOCAL_WORLD_SIZE: set by torchrun and by
    // --nproc-per-node for each rank).
    let local_ranks = std::env::var("LOCAL_WORLD_SIZE")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0 && replicas.world_size() > 1)
        .unwrap_or(1);
    let cores = (std::thread::available_parallelism().map_or(1, |n| n.get()) / local_ranks).max(1);
    let on_cuda = matches!(device, Device::Cuda(_));
    let workers = match cfg.workers {
        0 if on_cuda => cores,
        0 => (cores / 4).max(1),
        n => n,
    };
    // libtorch's own threads, whose OpenMP pool would otherwise take every core and fight the
    // decode workers for them (see docs/TRAINING.md, "Threads").
    let threads = if cfg.threads == 0 { cores.saturating_sub(workers).max(1) } else { cfg.threads };
    tch::set_num_threads(threads as i32);
    let loader_cfg = |training: bool| LoaderConfig {
        batch_size: cfg.batch_size,
        image_size: cfg.image_size,
        // --synthetic reads no record: no decode thread works ahead for batches never taken.
        workers: if cfg.synthetic { 0 } else { workers },
        prefetch: 2 * workers,
        shuffle: training,
        seed: if training { cfg.seed } else { 0 },
        augment: if training { cfg.augment() } else { Augment::NONE },
        // Training batches are split over the ranks; every rank validates on the whole set.
        rank: if training { replicas.rank() } else { 0 },
        world_size: if training { replicas.world_size() } else { 1 },
        drop_last: training,
        skip_corrupt: cfg.skip_corrupt,
        ..LoaderConfig::default()
    };
    let train_sets = open_sets(&cfg.train_sets, &cfg.data_dir)?;
    let mut datasets: Vec<DatasetIdentity> =
        train_sets.iter().map(|d| DatasetIdentity::of("train", d)).collect::<Result<_>>()?;
    // Pinned slots on CUDA: the feed's copies read them without the host waiting.
    let alloc = Arc::new(TrainerAlloc::for_device(device));
    let loader =
        Loader::with_alloc(train_sets, loader_cfg(true), alloc.clone()).context("cannot load the training sets")?;
    let valid = if cfg.valid_sets.is_empty() {
        None
    } else {
        let sets = open_sets(&cfg.valid_sets, &cfg.data_dir)?;
        for d in &sets {
            datasets.push(DatasetIdentity::of("valid", d)?);
        }
        Some(Loader::with_alloc(sets, loader_cfg(false), alloc).context("cannot load the validation sets")?)
    };
    if cfg.task == Task::Fr && !loader.has_class_labels() {
        bail!("the training sets have no identity labels (packed from a flat folder?): FR needs one folder per person");
    }
    // A sharded head keeps its largest shard on a rank.
    let head_classes = match cfg.head.partial_fc {
        Some(_) => crate::loss::shard_range(i64::from(loader.num_classes()), 0, replicas.world_size()).1 as u32,
        None => loader.num_classes(),
    };
    check_head_memory(cfg, head_classes, device)?;
    if resuming {
        let saved = SavedConfig::read(run)?;
        let changed = DatasetIdentity::changes(&saved.datasets, &datasets);
        if !changed.is_empty() && !cfg.allow_changed_data {
            bail!(
                "the data of run {} changed since it started: {}. Resuming on other data would not continue the same run; \
                 pass --allow-changed-data to continue anyway",
                run.root().display(),
                changed.join("; ")
            );
        }
    }
    if replicas.rank() == 0 {
        events.emit(Event::Threads { workers, threads });
    }
    Ok(Opened { device, loader, valid, datasets })
}

/// The run's device feed, watching for synchronising steps when
/// [`TrainConfig::sync_watch_after`] asks (CUDA only: the mode is CUDA's).
fn make_feed(numerics: &Numerics, cfg: &TrainConfig, classes: u32) -> Result<Box<dyn Input>> {
    let mut feed = feed::for_device(numerics, cfg.batch_size, cfg.image_size)?;
    if let Some(warm_up) = cfg.sync_watch_after {
        if !numerics.device.is_cuda() {
            bail!(
                "watching steps for CUDA synchronisations (FACEKIT_CUDA_SYNC_DEBUG_AFTER) needs --device cuda; the run's device is {:?}",
                numerics.device
            );
        }
        feed.watch_syncs(warm_up)?;
    }
    // Drawn before the run seeds its initial weights, which stay those of a run on real data.
    if cfg.synthetic {
        feed.make_synthetic(classes)?;
    }
    Ok(feed)
}

/// Refuses `--precision fp16` on a CPU device unless [`TrainConfig::allow_cpu_fp16`]: CPUs without
/// AMX-FP16 or AVX-512 FP16 run its convolutions on libtorch's reference kernels, about 100 times
/// slower than fp32, which no one asks for knowingly.
fn check_precision(cfg: &TrainConfig, device: Device) -> Result<()> {
    if device == Device::Cpu && cfg.precision == PrecisionKind::Fp16 && !cfg.allow_cpu_fp16 {
        bail!(
            "--precision fp16 on the CPU: without AMX-FP16 or AVX-512 FP16 units libtorch runs fp16 convolutions on slow \
             reference kernels, about 100 times slower than fp32. Train on the CPU in fp32 (--precision auto or fp32), \
             on a GPU (--device cuda), or pass --allow-cpu-fp16 if this CPU has those units"
        );
    }
    Ok(())
}

/// Refuses a run whose ArcFace head cannot fit: a manifest claiming billions of classes must not
/// end in an allocation failure inside libtorch.
fn check_head_memory(cfg: &TrainConfig, classes: u32, device: Device) -> Result<()> {
    if !cfg.task.has_fr() {
        return Ok(());
    }
    let copies = cfg.optimizer.parameter_copies();
    let bytes = u64::from(classes).saturating_mul(cfg.embedding_size as u64).saturating_mul(4 * copies);
    let available = match device {
        Device::Cpu => available_memory(),
        _ => None,
    };
    if let Some(avail) = available.filter(|a| bytes > *a) {
        bail!(
            "the ArcFace head for {classes} classes x {} dimensions needs {:.1} GiB (weights, gradients, optimiser state), \
             more than the {:.1} GiB of memory available",
            cfg.embedding_size,
            bytes as f64 / f64::from(1u32 << 30),
            avail as f64 / f64::from(1u32 << 30)
        );
    }
    Ok(())
}

/// `MemAvailable` of /proc/meminfo, in bytes.
fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The learning-rate schedule `cfg` asks for; `total_steps` is the run's length when known.
/// `cfg.warmup` must be in steps (the run's length in epochs is known by then).
pub fn build_schedule(cfg: &TrainConfig, total_steps: Option<u64>) -> Schedule {
    let warmup_steps = cfg.warmup.steps(0);
    let lr = cfg.lr;
    let inner = match cfg.schedule {
        ScheduleConfig::Plateau { patience, shrink, min_lr } => {
            Schedule::Plateau(DlibPlateau { threshold: patience as usize, shrink, min_lr, ..DlibPlateau::new(lr) })
        }
        ScheduleConfig::Step { every, shrink, min_lr } => {
            // One shrink every `every` steps until the rate would fall below `min_lr`.
            let mut milestones = Vec::new();
            let mut rate = lr * shrink;
            let mut at = every.max(1);
            while rate >= min_lr && shrink < 1.0 && total_steps.is_none_or(|t| at < t) {
                milestones.push(at);
                rate *= shrink;
                at += every.max(1);
            }
            Schedule::Step(StepSchedule { base_lr: lr, gamma: shrink, milestones, step: 0 })
        }
        ScheduleConfig::Cosine { min_lr } => Schedule::Cosine(Cosine {
            base_lr: lr,
            floor: min_lr,
            steps: total_steps.unwrap_or(0).saturating_sub(warmup_steps),
            step: 0,
        }),
        // The warm-up wrapper freezes it for the ramp, so at step k >= w it is at k − w of
        // t − w: arcface_torch's closed form (docs/TRAINING.md, "Learning rate").
        ScheduleConfig::Poly { power } => Schedule::Poly(Poly {
            base_lr: lr,
            power,
            steps: total_steps.unwrap_or(0).saturating_sub(warmup_steps),
            step: 0,
        }),
    };
    inner.with_warmup(warmup_steps)
}

/// The optimiser `cfg` asks for, over the trainable variables of `vs`.
pub(crate) fn build_optimizer(cfg: &TrainConfig, vs: &VarStore) -> Box<dyn Optimizer> {
    match cfg.optimizer {
        OptimizerConfig::Sgd { momentum, weight_decay } => Box::new(Sgd::new(vs, momentum, weight_decay)),
        OptimizerConfig::Adamw { betas, eps, weight_decay } => {
            Box::new(AdamW::new(vs, (betas[0], betas[1]), eps, weight_decay))
        }
    }
}

/// The weights of `--init PATH`, matched against the network `cfg` describes, built on the CPU
/// only to learn its variables' names and shapes (the class count does not matter: ArcFace's
/// centres never load). Weights that cannot give finite embeddings are refused.
fn read_init(cfg: &TrainConfig, path: &Path, events: &Observer) -> Result<Pretrained> {
    let net_cfg = net_config(cfg, 2)?;
    let vs = VarStore::new(Device::Cpu);
    FaceNet::new(&vs.root(), &net_cfg)?;
    FaceLoss::new(&vs.root(), &net_cfg, &cfg.head)?;
    let p = Pretrained::read_observed(path, &vs, events)?;
    // Training mode normalises with each batch's own statistics, so NaN or negative running
    // statistics would train without a sign and only break validation and every embedding later.
    p.copy_into(&vs)?;
    if let Some(problem) = crate::model::health::weights_problem(&vs) {
        bail!("--init {}: {problem}, so no embedding of these weights can be finite", p.report.file.display());
    }
    Ok(p)
}

/// The network configuration for this run (written as `net.json`).
pub(crate) fn net_config(cfg: &TrainConfig, num_classes: u32) -> Result<NetConfig> {
    Ok(NetConfig {
        arch: cfg.arch,
        image_size: cfg.image_size as i64,
        embedding_size: cfg.embedding_size,
        dropout: cfg.dropout,
        task: cfg.task,
        num_classes: num_classes as i64,
        zero_init_residual: cfg.zero_init_residual,
        ..NetConfig::default()
    })
}

/// `auto` (CUDA when available), `cpu`, `cuda` or `cuda:N`.
pub fn parse_device(s: &str) -> Result<Device> {
    Ok(match s {
        "auto" => Device::cuda_if_available(),
        "cpu" => Device::Cpu,
        "cuda" => {
            if !tch::Cuda::is_available() {
                bail!("--device cuda: libtorch sees no CUDA device");
            }
            Device::Cuda(0)
        }
        _ => {
            let n: usize = s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .with_context(|| format!("--device '{s}': expected auto, cpu, cuda or cuda:N"))?;
            if n >= tch::Cuda::device_count() as usize {
                bail!("--device {s}: only {} CUDA device(s) visible", tch::Cuda::device_count());
            }
            Device::Cuda(n)
        }
    })
}

fn device_name(device: Device) -> String {
    match device {
        Device::Cuda(n) => format!("cuda:{n}"),
        _ => "cpu".to_string(),
    }
}

fn open_sets(names: &[String], data_dir: &Path) -> Result<Vec<Arc<Dataset>>> {
    names
        .iter()
        .map(|n| {
            Dataset::open_name(n, Some(data_dir)).map(Arc::new).with_context(|| format!("cannot open dataset '{n}'"))
        })
        .collect()
}
