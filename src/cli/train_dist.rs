//! The distributed side of `facekit train`: one rank of a run launched by torchrun (or anything
//! that sets torchrun's variables), and `--nproc-per-node N`, which launches the local ranks itself.

use super::train::{report, DistBackend, TrainArgs};
use anyhow::{bail, Context, Result};
use facekit_io::StopFlag;
use facekit_train::dist::{launch, Backend, Ddp, DistEnv, World};
use facekit_train::trainer::{parse_device, Trainer};
use std::ffi::OsString;
use std::process::ExitCode;
use std::time::Duration;

/// `--nproc-per-node N`: runs this command line (without the flag) as N local ranks and waits.
pub fn launch(n: usize) -> Result<ExitCode> {
    if DistEnv::from_env()?.is_some() {
        bail!("--nproc-per-node {n} inside a distributed launch (RANK and WORLD_SIZE are set, by torchrun?): the launcher already started the ranks; drop --nproc-per-node");
    }
    if !(1..=1024).contains(&n) {
        bail!("--nproc-per-node must be between 1 and 1024, got {n}");
    }
    let exe = std::env::current_exe().context("cannot find this program's path to start the ranks")?;
    let argv = without_nproc(std::env::args_os().skip(1));
    // A rank that exits closes its connections, so the others notice at once; the grace is for
    // them to diagnose (a few seconds) and say why before they are killed.
    let code = launch::spawn_local(n, &exe, &argv, Duration::from_secs(30))?;
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
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
    let timeout = Duration::from_secs(args.dist_timeout);
    let choice = args.dist_backend;
    let mut cfg = args.into_config();
    cfg.device = env.device(&cfg.device)?;
    let device = parse_device(&cfg.device)?;
    let backend = Backend::for_device(backend_choice(choice), device)?;
    let world = World::join(&env, timeout)?;
    let who = format!("rank {} of {}", env.rank, env.world_size);
    let trained = world
        .group("ddp", backend)
        .and_then(|group| Trainer::new(cfg, command_line, stop.clone(), Box::new(Ddp::new(group, device))))
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
            Err(world.diagnose(e).context(who))
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
