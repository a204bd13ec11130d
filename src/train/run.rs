//! The training loop: batches to the device, forward, losses, backward, SGD step with the
//! schedule's learning rate, logs, validation, checkpoints, Ctrl-C and NaN handling, resume.

use super::checkpoint;
use super::config::{ArchKind, DatasetIdentity, SavedConfig, TaskKind, TrainConfig};
use super::logs::{RunLogs, StepLosses};
use super::numerics::Numerics;
use super::optim::Sgd;
use super::scaler::{GradScaler, ScalerConfig};
use super::config::ScheduleKind;
use super::schedule::{Cosine, DlibPlateau, Schedule, StepSchedule};
use super::state::{BestMetric, ScalerState, TrainState};
use super::validate::{self, Validation};
use crate::data::{Augment, Batch, Loader, LoaderConfig};
use crate::loss::{BatchLabels, FaceLoss};
use crate::model::{Arch, FaceNet, NetConfig, Task, TaskWeights};
use crate::shard::Dataset;
use anyhow::{bail, Context, Result};
use super::run_dir::RunDir;
use crate::signals::StopFlag;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use tch::{nn::VarStore, Device, Tensor};

/// Test-only: makes the loss of this step NaN, to exercise the divergence handling end to end.
pub const INJECT_NAN_ENV: &str = "FACEKIT_TEST_INJECT_NAN_AT_STEP";

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The step/epoch limit or the schedule's stop rule was reached.
    Finished(Summary),
    /// Stopped by a signal (Ctrl-C, SIGTERM) or request: the current step was finished and
    /// `last` written.
    Interrupted(Summary),
    /// The loss became NaN or infinite at `step`; `last` holds the last good checkpoint.
    Diverged { step: u64, summary: Summary },
    /// A corrupt record stopped the run (without `--skip-corrupt`); the message names it.
    CorruptData { message: String, summary: Summary },
}

/// What the end-of-run summary reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// The run's folder.
    pub run_dir: PathBuf,
    /// Steps completed (across resumes).
    pub steps: u64,
    /// Loss of the last completed step.
    pub final_loss: Option<f64>,
    /// Best validation metric.
    pub best: Option<BestMetric>,
    /// Mean training throughput of this process (images per second, data wait included).
    pub images_per_second: f64,
    /// Mean time a step waited for its batch, in milliseconds.
    pub mean_data_wait_ms: f64,
    /// Corrupt records skipped in training (across resumes) and in validation.
    pub skipped_corrupt: u64,
    /// The fp16 loss scaler at the end (scale, skipped steps); `None` without loss scaling.
    pub loss_scaling: Option<ScalerState>,
    /// Step of the `last` checkpoint on disk, if one was written (or resumed from).
    pub last_checkpoint: Option<u64>,
    /// Whether a `best` checkpoint exists.
    pub has_best: bool,
}

/// Runs (or resumes) training as `cfg` says; `command_line` is recorded in `config.json`. The
/// run stops after the step in which `stop` is set (the caller decides what sets it: signals in
/// the CLI).
pub fn train(cfg: TrainConfig, command_line: Vec<String>, stop: StopFlag) -> Result<Outcome> {
    // Every flag is checked before any folder is touched.
    cfg.validate()?;
    let (cfg, run, resume_dir) = prepare_run(cfg)?;
    // Nothing is deleted, and no folder is left behind, until the whole configuration holds and
    // the data is open.
    let opened = cfg.validate().and_then(|()| open_run(&cfg, resume_dir.as_deref(), run.path()));
    let Opened { device, loader, valid_loader, datasets } = match opened {
        Ok(o) => o,
        Err(e) => {
            run.abandon();
            return Err(e);
        }
    };
    if cfg.overwrite && !run.created() {
        run.clear()?;
    }
    let run_dir = run.path().to_path_buf();
    let numerics = Numerics::new(device, cfg.precision, cfg.memory_format);
    tch::manual_seed(cfg.seed as i64);

    let net_cfg = net_config(&cfg, loader.num_classes());
    let mut vs = VarStore::new(device);
    let net = FaceNet::new(&vs.root(), &net_cfg)?;
    let loss_fn = FaceLoss::new(&vs.root(), &net_cfg)?;
    // Before the optimiser exists, so that its momentum buffers are born in the same layout.
    numerics.memory_format.apply_to_vars(&vs);
    let mut opt = Sgd::new(&vs, cfg.momentum, cfg.weight_decay);
    let mut state = TrainState {
        step: 0,
        epoch: 0,
        batch_in_epoch: 0,
        lr: cfg.lr,
        schedule: serde_json::Value::Null,
        seed: cfg.seed,
        best: None,
        images_seen: 0,
        skipped_corrupt: 0,
        train_seconds: 0.0,
        scaler: None,
    };
    if let Some(dir) = &resume_dir {
        state = checkpoint::load(dir, &mut vs, &mut opt)?;
        // Loading copies into the existing variables, which keeps their layout; this only
        // guarantees it.
        numerics.memory_format.apply_to_vars(&vs);
        eprintln!("facekit train: resuming {} at step {} (epoch {}, batch {})", run_dir.display(), state.step, state.epoch, state.batch_in_epoch);
    }
    // A run resumed in fp16 continues with its saved scale; one that switched to fp16 starts afresh.
    let mut scaler = numerics.needs_loss_scaling().then(|| match &state.scaler {
        Some(saved) => GradScaler::from_state(ScalerConfig::default(), saved, device),
        None => GradScaler::new(ScalerConfig::default(), device),
    });
    let device_name = match device {
        Device::Cuda(n) => format!("cuda:{n}"),
        _ => "cpu".to_string(),
    };
    eprintln!("facekit train: device {device_name}, {}", numerics.describe());
    let saved = match &resume_dir {
        Some(_) => {
            let mut saved = SavedConfig::read(&run_dir)?;
            saved.resumed_with.push(command_line);
            saved.config = cfg.clone();
            saved.datasets = datasets;
            saved
        }
        None => SavedConfig {
            command_line,
            resumed_with: Vec::new(),
            tool_version: env!("CARGO_PKG_VERSION").into(),
            config: cfg.clone(),
            datasets,
        },
    };
    saved.write(&run_dir)?;
    let mut net_json = serde_json::to_vec_pretty(&net_cfg)?;
    net_json.push(b'\n');
    crate::atomic::write_atomic(run_dir.join("net.json"), &net_json)?;
    let mut logs = RunLogs::open(&run_dir, state.step)?;

    let inject_nan: Option<u64> = std::env::var(INJECT_NAN_ENV).ok().and_then(|v| v.parse().ok());
    let batches_per_epoch = loader.batches_per_epoch();
    let max_steps = match (cfg.max_steps, cfg.epochs) {
        (Some(s), Some(e)) => Some(s.min(e * batches_per_epoch)),
        (s, e) => s.or(e.map(|e| e * batches_per_epoch)),
    };
    let mut schedule = match &resume_dir {
        Some(dir) => serde_json::from_value::<Schedule>(state.schedule.clone())
            .with_context(|| format!("{}: the schedule state in state.json is not valid", dir.display()))?,
        None => build_schedule(&cfg, max_steps),
    };
    let bar = crate::progress::items(max_steps.unwrap_or(0), "steps");
    bar.set_position(state.step);
    if max_steps.is_none() {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }

    let started = Instant::now();
    let seconds_before = state.train_seconds;
    let (mut images_here, mut wait_total, mut steps_here) = (0u64, 0f64, 0u64);
    let (mut window_images, mut window_wait, mut window_start) = (0u64, 0f64, Instant::now());
    let mut final_loss = None;
    let mut valid_skipped = 0u64;
    let mut last_checkpoint = resume_dir.as_ref().map(|_| state.step);
    let mut labelled = LabelGuard::new(net_cfg.task);
    let mut last_valid_step = None;
    let mut stopped_by_schedule = false;

    let summary = |state: &TrainState, final_loss, images_here: u64, wait_total: f64, steps_here: u64, valid_skipped| Summary {
        run_dir: run_dir.clone(),
        steps: state.step,
        final_loss,
        best: state.best.clone(),
        images_per_second: images_here as f64 / started.elapsed().as_secs_f64().max(1e-9),
        mean_data_wait_ms: if steps_here == 0 { 0.0 } else { 1e3 * wait_total / steps_here as f64 },
        skipped_corrupt: state.skipped_corrupt + valid_skipped,
        loss_scaling: state.scaler.clone(),
        last_checkpoint: None,
        has_best: checkpoint::checkpoint_dir(&run_dir, "best").is_some(),
    };

    'epochs: while max_steps.is_none_or(|m| state.step < m) && !stopped_by_schedule {
        let mut it = loader.epoch(state.epoch, state.batch_in_epoch);
        let mut skipped_seen = 0u64;
        loop {
            if max_steps.is_some_and(|m| state.step >= m) {
                break 'epochs;
            }
            let t_wait = Instant::now();
            let batch = match it.next() {
                None => break,
                Some(Ok(b)) => b,
                Some(Err(e)) => {
                    let message = format!("{e:#}");
                    state.scaler = scaler.as_ref().map(GradScaler::state);
                    logs.flush()?;
                    bar.finish_and_clear();
                    return Ok(Outcome::CorruptData {
                        message,
                        summary: Summary { last_checkpoint, ..summary(&state, final_loss, images_here, wait_total, steps_here, valid_skipped) },
                    });
                }
            };
            let wait = t_wait.elapsed().as_secs_f64();
            let newly_skipped = it.stats().corrupt_skipped - skipped_seen;
            skipped_seen = it.stats().corrupt_skipped;
            if newly_skipped > 0 {
                for c in it.stats().corrupt.iter().rev().take(newly_skipped as usize) {
                    bar.suspend(|| eprintln!("facekit train: skipped corrupt record: {}", c.error));
                }
            }

            // Reseeding from the step makes dropout's random stream a function of the step alone,
            // so a resumed run draws exactly what the uninterrupted one drew.
            tch::manual_seed((cfg.seed as i64).wrapping_mul(1_000_003).wrapping_add(state.step as i64));
            let lr = schedule.lr();
            let xs = numerics.input(&batch);
            let labels = labels_to_device(&batch, device);
            let out = numerics.forward(&net, &xs, true)?;
            let losses = loss_fn.losses(&out, &labels);
            let mut total = losses.total.double_value(&[]);
            if inject_nan == Some(state.step + 1) {
                total = f64::NAN;
            }
            if !total.is_finite() {
                state.scaler = scaler.as_ref().map(GradScaler::state);
                logs.flush()?;
                bar.finish_and_clear();
                return Ok(Outcome::Diverged {
                    step: state.step + 1,
                    summary: Summary { last_checkpoint, ..summary(&state, final_loss, images_here, wait_total, steps_here, valid_skipped) },
                });
            }
            opt.zero_grad();
            match scaler.as_mut() {
                Some(scaler) => {
                    // A step whose gradients overflowed is skipped but still counts as a step:
                    // its loss is logged and the schedule sees it, as with PyTorch's GradScaler.
                    scaler.scale(&losses.total).backward();
                    scaler.step(&mut opt, lr)?;
                    scaler.update();
                }
                None => {
                    losses.total.backward();
                    opt.step(lr);
                }
            }

            state.step += 1;
            state.batch_in_epoch += 1;
            state.images_seen += batch.n as u64;
            state.skipped_corrupt += newly_skipped;
            state.lr = lr;
            let decision = schedule.observe(total);
            state.schedule = serde_json::to_value(&schedule)?;
            final_loss = Some(total);
            let step_losses = StepLosses {
                total,
                fr: losses.fr.as_ref().map(|t| t.double_value(&[])),
                gender: losses.gender.as_ref().map(|t| t.double_value(&[])),
                age: losses.age.as_ref().map(|t| t.double_value(&[])),
            };
            logs.step(state.step, state.epoch, lr, &step_losses)?;
            images_here += batch.n as u64;
            wait_total += wait;
            steps_here += 1;
            window_images += batch.n as u64;
            window_wait += wait;
            bar.inc(1);

            if cfg.log_every > 0 && state.step % cfg.log_every == 0 {
                let secs = window_start.elapsed().as_secs_f64().max(1e-9);
                let ips = window_images as f64 / secs;
                let wait_ms = 1e3 * window_wait / cfg.log_every as f64;
                let mut event = serde_json::json!({
                    "step": state.step, "epoch": state.epoch, "lr": lr, "loss": total,
                    "fr_loss": step_losses.fr, "gender_loss": step_losses.gender, "age_loss": step_losses.age,
                    "images_per_second": ips, "data_wait_ms": wait_ms,
                });
                let mut line = format!(
                    "step {} epoch {} loss {total:.4} lr {lr:.3e} {ips:.1} images/s data wait {wait_ms:.1} ms/step",
                    state.step, state.epoch
                );
                if let Some(s) = scaler.as_ref().map(GradScaler::state) {
                    event["loss_scale"] = s.scale.into();
                    event["skipped_steps"] = s.skipped_steps.into();
                    line += &format!(" loss scale {} ({} steps skipped)", s.scale, s.skipped_steps);
                }
                logs.event(&event)?;
                if bar.is_hidden() {
                    eprintln!("{line}");
                } else {
                    bar.set_message(format!("loss {total:.4}"));
                    bar.suspend(|| eprintln!("{line}"));
                }
                (window_images, window_wait, window_start) = (0, 0.0, Instant::now());
            }
            if decision.shrunk {
                bar.suspend(|| eprintln!("step {}: learning rate now {:.3e}", state.step, decision.lr));
            }
            stopped_by_schedule = decision.stop;

            let at_end = stopped_by_schedule || max_steps.is_some_and(|m| state.step >= m);
            if let Some(vl) = &valid_loader {
                if at_end || (cfg.valid_every > 0 && state.step % cfg.valid_every == 0) {
                    let v = validate::validate(&net, &loss_fn, vl, &numerics, net_cfg.num_classes)?;
                    valid_skipped = v.skipped_corrupt;
                    last_valid_step = Some(state.step);
                    bar.suspend(|| eprintln!("step {} validation: {}", state.step, describe(&v)));
                    logs.event(&serde_json::json!({ "step": state.step, "validation": v.metrics, "valid_images": v.images }))?;
                    logs.draw()?;
                    let main = validate::main_metric(net_cfg.task);
                    if let Some(&value) = v.metrics.get(main.name) {
                        if state.best.as_ref().is_none_or(|b| b.is_beaten_by(value)) {
                            state.best = Some(BestMetric {
                                name: main.name.into(),
                                value,
                                higher_is_better: main.higher_is_better,
                                step: state.step,
                            });
                            state.train_seconds = seconds_before + started.elapsed().as_secs_f64();
                            state.scaler = scaler.as_ref().map(GradScaler::state);
                            checkpoint::write(&run_dir, "best", &vs, &opt, &state)?;
                        }
                    }
                }
            }
            labelled.observe(&batch, at_end)?;
            let interrupted = stop.is_set();
            if at_end || interrupted || (cfg.checkpoint_every > 0 && state.step % cfg.checkpoint_every == 0) {
                state.train_seconds = seconds_before + started.elapsed().as_secs_f64();
                if state.batch_in_epoch >= batches_per_epoch {
                    // The epoch is complete: the next step starts the next one.
                    state.epoch += 1;
                    state.batch_in_epoch = 0;
                }
                state.scaler = scaler.as_ref().map(GradScaler::state);
                checkpoint::write(&run_dir, "last", &vs, &opt, &state)?;
                last_checkpoint = Some(state.step);
                if state.batch_in_epoch == 0 && !interrupted {
                    logs.flush()?;
                    continue 'epochs;
                }
            }
            if interrupted {
                logs.flush()?;
                logs.draw()?;
                bar.finish_and_clear();
                return Ok(Outcome::Interrupted(Summary { last_checkpoint, ..summary(&state, final_loss, images_here, wait_total, steps_here, valid_skipped) }));
            }
            if stopped_by_schedule {
                break 'epochs;
            }
        }
        state.epoch += 1;
        state.batch_in_epoch = 0;
    }
    let _ = last_valid_step;
    state.train_seconds = seconds_before + started.elapsed().as_secs_f64();
    state.scaler = scaler.as_ref().map(GradScaler::state);
    checkpoint::write(&run_dir, "last", &vs, &opt, &state)?;
    last_checkpoint = Some(state.step);
    logs.flush()?;
    logs.draw()?;
    bar.finish_and_clear();
    Ok(Outcome::Finished(Summary { last_checkpoint, ..summary(&state, final_loss, images_here, wait_total, steps_here, valid_skipped) }))
}

/// The run folder, locked, and the configuration to use; for `--resume`, the saved configuration
/// with this command line's step limits, device, workers, threads and logging. Nothing is deleted
/// here but temporary files an interrupted run left (stale for certain once the lock is held).
fn prepare_run(cfg: TrainConfig) -> Result<(TrainConfig, RunDir, Option<PathBuf>)> {
    let Some(resume) = cfg.resume.clone() else {
        let run = RunDir::lock(&cfg.model_dir.join(cfg.run_name()), true)?;
        remove_stale(&run)?;
        if !cfg.overwrite && checkpoint::checkpoint_dir(run.path(), "last").is_some() {
            bail!("run folder {} already holds a run: continue it with --resume, or choose another --run-name, or --overwrite", run.path().display());
        }
        return Ok((cfg, run, None));
    };
    let run_dir = [PathBuf::from(&resume), cfg.model_dir.join(&resume)]
        .into_iter()
        .find(|d| d.join("config.json").is_file())
        .with_context(|| format!("no run '{resume}': neither {resume}/config.json nor {}/config.json exists", cfg.model_dir.join(&resume).display()))?;
    let run = RunDir::lock(&run_dir, false)?;
    remove_stale(&run)?;
    let saved = SavedConfig::read(&run_dir)?;
    let ckpt = checkpoint::checkpoint_dir(&run_dir, "last")
        .with_context(|| format!("run {} has no checkpoint to resume from (checkpoints/last)", run_dir.display()))?;
    let mut merged = saved.config;
    if cfg.max_steps.is_some() || cfg.epochs.is_some() {
        merged.max_steps = cfg.max_steps;
        merged.epochs = cfg.epochs;
    }
    merged.device = cfg.device;
    merged.workers = cfg.workers;
    merged.threads = cfg.threads;
    merged.log_every = cfg.log_every;
    merged.skip_corrupt = cfg.skip_corrupt || merged.skip_corrupt;
    merged.allow_changed_data = cfg.allow_changed_data;
    merged.resume = Some(resume);
    Ok((merged, run, Some(ckpt)))
}

fn remove_stale(run: &RunDir) -> Result<()> {
    let n = run.remove_stale()?;
    if n > 0 {
        eprintln!("facekit train: removed {n} temporary file(s) an interrupted run left in {}", run.path().display());
    }
    Ok(())
}

/// What a run needs before its folder may be changed: the device, both loaders (every dataset
/// opened and checked) and the datasets' identities, compared with the saved ones on resume.
struct Opened {
    device: Device,
    loader: Loader,
    valid_loader: Option<Loader>,
    datasets: Vec<DatasetIdentity>,
}

fn open_run(cfg: &TrainConfig, resume_dir: Option<&Path>, run_dir: &Path) -> Result<Opened> {
    let device = parse_device(&cfg.device)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let on_cuda = matches!(device, Device::Cuda(_));
    let workers = match cfg.workers {
        0 if on_cuda => cores,
        0 => (cores / 4).max(1),
        n => n,
    };
    // libtorch's own threads, whose OpenMP pool would otherwise take every core and fight the
    // decode workers for them (see main.rs for OMP_WAIT_POLICY).
    let threads = if cfg.threads == 0 { cores.saturating_sub(workers).max(1) } else { cfg.threads };
    tch::set_num_threads(threads as i32);
    let loader_cfg = |shuffle: bool| LoaderConfig {
        batch_size: cfg.batch_size,
        image_size: cfg.image_size,
        workers,
        prefetch: 2 * workers,
        shuffle,
        seed: if shuffle { cfg.seed } else { 0 },
        augment: if shuffle { cfg.augment() } else { Augment::NONE },
        rank: 0,
        world_size: 1,
        drop_last: shuffle,
        skip_corrupt: cfg.skip_corrupt,
    };
    let train_sets = open_sets(&cfg.train_sets, &cfg.data_dir)?;
    let mut datasets: Vec<DatasetIdentity> = train_sets.iter().map(|d| DatasetIdentity::of("train", d)).collect::<Result<_>>()?;
    let loader = Loader::new(train_sets, loader_cfg(true)).context("cannot load the training sets")?;
    let valid_loader = if cfg.valid_sets.is_empty() {
        None
    } else {
        let sets = open_sets(&cfg.valid_sets, &cfg.data_dir)?;
        for d in &sets {
            datasets.push(DatasetIdentity::of("valid", d)?);
        }
        Some(Loader::new(sets, loader_cfg(false)).context("cannot load the validation sets")?)
    };
    if cfg.task == TaskKind::Fr && !loader.has_class_labels() {
        bail!("the training sets have no identity labels (packed from a flat folder?): FR needs one folder per person");
    }
    check_head_memory(cfg, loader.num_classes(), device)?;
    if resume_dir.is_some() {
        let saved = SavedConfig::read(run_dir)?;
        let changed = DatasetIdentity::changes(&saved.datasets, &datasets);
        if !changed.is_empty() && !cfg.allow_changed_data {
            bail!(
                "the data of run {} changed since it started: {}. Resuming on other data would not continue the same run; \
                 pass --allow-changed-data to continue anyway",
                run_dir.display(),
                changed.join("; ")
            );
        }
    }
    eprintln!("facekit train: {workers} decode worker(s), {threads} compute thread(s)");
    Ok(Opened { device, loader, valid_loader, datasets })
}

/// Refuses a run whose ArcFace head cannot fit: a manifest claiming billions of classes must not
/// end in an allocation failure inside libtorch.
fn check_head_memory(cfg: &TrainConfig, classes: u32, device: Device) -> Result<()> {
    if !matches!(cfg.task, TaskKind::Fr | TaskKind::Multi) {
        return Ok(());
    }
    // Weights, their gradient and the momentum buffer, in fp32.
    let bytes = u64::from(classes).saturating_mul(cfg.embedding_size as u64).saturating_mul(4 * 3);
    let available = match device {
        Device::Cpu => available_memory(),
        _ => None,
    };
    if let Some(avail) = available.filter(|a| bytes > *a) {
        bail!(
            "the ArcFace head for {classes} classes x {} dimensions needs {:.1} GiB (weights, gradients, momentum), \
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
pub fn build_schedule(cfg: &TrainConfig, total_steps: Option<u64>) -> Schedule {
    let inner = match cfg.schedule {
        ScheduleKind::Plateau => Schedule::Plateau(DlibPlateau {
            threshold: cfg.plateau_steps as usize,
            shrink: cfg.lr_shrink,
            min_lr: cfg.min_lr,
            ..DlibPlateau::new(cfg.lr)
        }),
        ScheduleKind::Step => {
            // One shrink every --plateau-steps until the rate would fall below --min-lr.
            let mut milestones = Vec::new();
            let mut lr = cfg.lr * cfg.lr_shrink;
            let mut at = cfg.plateau_steps.max(1);
            while lr >= cfg.min_lr && cfg.lr_shrink < 1.0 && total_steps.is_none_or(|t| at < t) {
                milestones.push(at);
                lr *= cfg.lr_shrink;
                at += cfg.plateau_steps.max(1);
            }
            Schedule::Step(StepSchedule { base_lr: cfg.lr, gamma: cfg.lr_shrink, milestones, step: 0 })
        }
        ScheduleKind::Cosine => Schedule::Cosine(Cosine {
            base_lr: cfg.lr,
            floor: cfg.min_lr,
            steps: total_steps.unwrap_or(0).saturating_sub(cfg.warmup_steps),
            step: 0,
        }),
    };
    inner.with_warmup(cfg.warmup_steps)
}

/// The network configuration for this run (written as `net.json`).
pub fn net_config(cfg: &TrainConfig, num_classes: u32) -> NetConfig {
    let task = match cfg.task {
        TaskKind::Fr => Task::Fr,
        TaskKind::Gender => Task::Gender,
        TaskKind::Age => Task::Age,
        TaskKind::Multi => Task::Multi,
    };
    NetConfig {
        arch: match cfg.arch {
            ArchKind::Resnet50 => Arch::Resnet50,
            ArchKind::Tiny => Arch::Tiny,
        },
        image_size: cfg.image_size as i64,
        embedding_size: cfg.embedding_size,
        dropout: cfg.dropout,
        task,
        num_classes: num_classes as i64,
        arcface_s: cfg.arcface_scale,
        arcface_m: cfg.arcface_margin,
        weights: TaskWeights { fr: cfg.multi_weights[0], gender: cfg.multi_weights[1], age: cfg.multi_weights[2] },
        ..NetConfig::default()
    }
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

fn open_sets(names: &[String], data_dir: &Path) -> Result<Vec<Arc<Dataset>>> {
    names
        .iter()
        .map(|n| Dataset::open_name(n, Some(data_dir)).map(Arc::new).with_context(|| format!("cannot open dataset '{n}'")))
        .collect()
}

fn labels_to_device(batch: &Batch, device: Device) -> BatchLabels {
    let t = |v: &[i64]| Tensor::from_slice(v).to_device(device);
    BatchLabels { class: t(&batch.class), gender: t(&batch.gender), age: t(&batch.age) }
}

/// Stops a run whose training sets carry no label for what it learns: Gender on data without
/// gender labels would train at loss 0 and "finish". Decided after [`LabelGuard::STEPS`] steps
/// (or at the end of a shorter run): with shuffled batches, a label held by even one image in a
/// few hundred has then been seen.
struct LabelGuard {
    task: Task,
    seen: [u64; 3],
    steps: u64,
    decided: bool,
}

impl LabelGuard {
    const STEPS: u64 = 100;

    fn new(task: Task) -> Self {
        LabelGuard { task, seen: [0; 3], steps: 0, decided: false }
    }

    fn observe(&mut self, batch: &Batch, at_end: bool) -> Result<()> {
        if self.decided {
            return Ok(());
        }
        self.steps += 1;
        for (n, labels) in self.seen.iter_mut().zip([&batch.class, &batch.gender, &batch.age]) {
            *n += labels.iter().filter(|&&l| l >= 0).count() as u64;
        }
        if !at_end && self.steps < Self::STEPS {
            return Ok(());
        }
        self.decided = true;
        let [class, gender, age] = self.seen;
        let missing = match self.task {
            Task::Gender if gender == 0 => Some("gender"),
            Task::Age if age == 0 => Some("age"),
            Task::Multi if class + gender + age == 0 => Some("identity, gender or age"),
            _ => None,
        };
        if let Some(what) = missing {
            bail!(
                "none of the images of the first {} step(s) has a {what} label: the training sets carry none, and the loss \
                 would be 0 throughout (pack them with --attributes or --utkface-labels)",
                self.steps
            );
        }
        Ok(())
    }
}

fn describe(v: &Validation) -> String {
    v.metrics.iter().map(|(k, x)| format!("{k} {x:.4}")).collect::<Vec<_>>().join(", ")
}
