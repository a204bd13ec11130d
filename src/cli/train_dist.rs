//! The distributed side of `facekit train`: one rank of a run launched by torchrun (or anything
//! that sets torchrun's variables), and `--nproc-per-node N`, which launches the local ranks itself.

use super::train::{report, DistBackend, TrainArgs};
use anyhow::{bail, Context, Result};
use facekit_io::StopFlag;
use facekit_train::dist::agree::Disagreement;
use facekit_train::dist::launch::{self, Launch};
use facekit_train::dist::world::check_timeout;
use facekit_train::dist::{Backend, DistEnv, World};
use facekit_train::trainer::{parse_device, Trainer};
use facekit_train::TrainConfig;
use std::ffi::OsString;
use std::process::ExitCode;
use std::time::Duration;

/// `--nproc-per-node N`: checks every flag as each of the N ranks will, then runs this command
/// line (without the flag) as N local ranks and waits.
pub fn launch(n: usize, args: &TrainArgs) -> Result<ExitCode> {
    quiet_cpp_stacks();
    if DistEnv::from_env()?.is_some() {
        bail!("--nproc-per-node {n} inside a distributed launch (RANK and WORLD_SIZE are set, by torchrun?): the launcher already started the ranks; drop --nproc-per-node");
    }
    if n == 0 {
        bail!("--nproc-per-node must be at least 1");
    }
    // The last local rank needs the most (cuda:N-1 must exist); the store's port plays no part.
    let checked = check_flags(args, &DistEnv::local(n - 1, n, 1))?;
    if checked.device == "cpu" {
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        launch::check_cpu_room(n, cores)?;
    }
    let exe = std::env::current_exe().context("cannot find this program's path to start the ranks")?;
    let argv = without_nproc(std::env::args_os().skip(1));
    let signals = forwarded_signals()?;
    // A rank that exits closes its connections, so the others notice at once; the grace is for
    // them to diagnose (a few seconds) and say why before they are killed.
    let plan = Launch { nproc: n, program: &exe, args: &argv, grace: Duration::from_secs(30), signals: Some(&signals) };
    let report = launch::spawn_local(&plan, |event| errln!("facekit launch: {event}"))?;
    for line in report.summary() {
        errln!("facekit launch: {line}");
    }
    Ok(ExitCode::from(u8::try_from(report.code()).unwrap_or(1)))
}

/// The launcher's SIGINT, SIGTERM and SIGHUP, one message per arrival, for the launch to forward
/// to every rank instead of stopping this process (the ranks stop, save and say so; the launcher
/// then ends with their code). Installed here, just before the ranks start, and for the rest of
/// the process: until then a signal has its default effect, and after the launch the process only
/// prints the summary and exits. A thread reads the signals as they come, so that two a person
/// sends (Ctrl-C twice: stop at once) stay two.
fn forwarded_signals() -> Result<std::sync::mpsc::Receiver<i32>> {
    let mut signals = signal_hook::iterator::Signals::new(launch::STOP_SIGNALS)
        .context("cannot handle SIGINT, SIGTERM and SIGHUP to forward them to the ranks")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("forward-signals".into())
        .spawn(move || signals.forever().try_for_each(|sig| tx.send(sig)))
        .context("cannot start the thread that forwards signals to the ranks")?;
    Ok(rx)
}

/// libtorch's C++ stacks ("Exception raised from ... frame #0 ...") tell a user nothing; as in
/// PyTorch, `TORCH_SHOW_CPP_STACKTRACES=1` keeps them for whoever debugs libtorch itself.
fn quiet_cpp_stacks() {
    if std::env::var_os("TORCH_SHOW_CPP_STACKTRACES").is_none_or(|v| v != "1") {
        facekit_train::dist::hide_cpp_stacks();
    }
}

/// What a rank takes from its flags once they are checked.
struct Checked {
    /// `--dist-timeout`.
    timeout: Duration,
    /// This rank's device, resolved (`cpu`, `cuda:LOCAL_RANK`), as the configuration records it.
    device: String,
    /// The backend of the collectives.
    backend: Backend,
}

/// Every check a rank makes of its flags before it joins the run, for the rank `env` describes:
/// the configuration (as the trainer validates it), the collective deadline, the device for its
/// local rank and the backend for that device. The launcher makes them before starting any rank.
fn check_flags(args: &TrainArgs, env: &DistEnv) -> Result<Checked> {
    let timeout = Duration::from_secs(args.dist_timeout);
    check_timeout(timeout).with_context(|| format!("--dist-timeout {}", args.dist_timeout))?;
    let cfg = TrainConfig { world_size: env.world_size, ..args.clone().into_config()? };
    cfg.validate()?;
    let device = env.device(&cfg.device)?;
    let backend = Backend::for_device(backend_choice(args.dist_backend), parse_device(&device)?)?;
    Ok(Checked { timeout, device, backend })
}

/// The command line the ranks run: this one without `--nproc-per-node N`.
fn without_nproc(args: impl Iterator<Item = OsString>) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut skip_value = false;
    for a in args {
        if skip_value {
            skip_value = false;
            continue;
        }
        match a.to_str() {
            Some("--nproc-per-node") => skip_value = true,
            Some(s) if s.starts_with("--nproc-per-node=") => {}
            _ => out.push(a),
        }
    }
    out
}

/// Trains as the rank `env` describes, in the run every rank joins; a failure is reported to the
/// other ranks and, when a collective failed, explained by what happened to them.
pub fn rank(env: DistEnv, args: TrainArgs, command_line: Vec<String>, stop: StopFlag) -> Result<ExitCode> {
    quiet_cpp_stacks();
    let Checked { timeout, device: device_name, backend } = check_flags(&args, &env)?;
    let device = parse_device(&device_name)?;
    let mut cfg = args.into_config()?;
    cfg.device = device_name;
    let world = match World::join(&env, timeout, &stop) {
        Ok(world) => world,
        // Asked to stop before the run began: nothing to save, but a scheduler must see a stop.
        Err(e) if stop.is_set() => {
            errln!("facekit train: {e:#}");
            return Ok(ExitCode::from(stop.exit_code()));
        }
        Err(e) => return Err(e),
    };
    // A new run without --run-name is named from the clock: rank 0's reading names it for all.
    if cfg.run_name.is_none() && cfg.resume.is_none() {
        cfg.run_name = Some(world.from_rank_0("run_name", || cfg.run_name())?);
    }
    let who = format!("rank {} of {}", env.rank, env.world_size);
    let trained = world
        .ddp(backend, device)
        .and_then(|ddp| Trainer::new(cfg, command_line, stop.clone(), Box::new(ddp), super::train_events::observer()))
        .and_then(Trainer::run);
    match trained {
        Ok(outcome) => {
            if let facekit_train::Outcome::CorruptData { message, .. } = &outcome {
                world.report_failure(message);
            }
            let code = report(outcome, &stop, env.rank == 0);
            world.finish()?;
            Ok(code)
        }
        Err(e) => {
            world.report_failure(&format!("{e:#}"));
            // Ranks that disagree all say so themselves; a failed collective needs the others' story.
            let e = if e.downcast_ref::<Disagreement>().is_some() { e } else { world.diagnose(e) };
            Err(e.context(who))
        }
    }
}

fn backend_choice(choice: DistBackend) -> Option<Backend> {
    match choice {
        DistBackend::Auto => None,
        DistBackend::Gloo => Some(Backend::Gloo),
        DistBackend::Nccl => Some(Backend::Nccl),
    }
}
