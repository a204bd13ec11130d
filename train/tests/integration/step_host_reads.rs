//! The training step never reads the device between read points: every device-to-host read of the
//! loop goes through one counted door (`HostReads`), and dlib's plateau rule gets the losses in
//! order at each read, so that `--log-every 1` decides exactly as the per-step rule.
//! Trained on a small set of real LFW photos (`SMALL_RAW_LFW`: 4 identities, 8 photos each, raw
//! 32-pixel chips) with the tiny network on the CPU.

use facekit_testkit::runs::{step_losses, StepLoss};
use facekit_testkit::sets::SMALL_RAW_LFW;
use facekit_train::model::{Arch, Task};
use facekit_train::trainer::config::ScheduleConfig;
use facekit_train::trainer::schedule::DlibPlateau;
use facekit_train::trainer::{Outcome, SingleProcess, TrainConfig, Trainer};
use std::collections::BTreeMap;
use std::path::Path;

pub(crate) fn config(dir: &Path, name: &str, steps: u64, log_every: u64) -> TrainConfig {
    TrainConfig {
        task: Task::Fr,
        train_sets: vec!["lfw".into()],
        data_dir: dir.to_path_buf(),
        arch: Arch::Tiny,
        image_size: SMALL_RAW_LFW.storage.side,
        batch_size: 8,
        workers: 1,
        threads: 1,
        device: "cpu".into(),
        max_steps: Some(steps),
        log_every,
        checkpoint_every: 0,
        model_dir: dir.join("Model"),
        run_name: Some(name.into()),
        ..TrainConfig::default()
    }
}

fn finished(outcome: Outcome) {
    assert!(matches!(outcome, Outcome::Finished(_)), "{outcome:?}");
}

#[test]
fn a_steady_state_step_reads_nothing_back_and_each_log_point_reads_once() {
    let _turn = facekit_testkit::rng_turn();
    let t = tempfile::tempdir().unwrap();
    SMALL_RAW_LFW.write(t.path());
    // Clipping too: its norm stays on the device until the log point reads it.
    let cfg = TrainConfig { clip_grad_norm: Some(5.0), ..config(t.path(), "reads", 20, 10) };
    let trainer = Trainer::new(cfg, vec![], Default::default(), Box::new(SingleProcess), Default::default()).unwrap();
    let reads = trainer.host_reads();
    finished(trainer.run().unwrap());
    let by_step = reads.by_step();
    // What one log point needs, as the first one read it; the second reads the same.
    let per_point = by_step.get(&10).copied().unwrap_or(0);
    assert!(per_point > 0, "the log point at step 10 read the losses: {by_step:?}");
    assert_eq!(
        by_step,
        BTreeMap::from([(10, per_point), (20, per_point)]),
        "no step between the log points read anything"
    );
    assert_eq!(reads.total(), 2 * per_point);
}

/// A plateau run whose rate shrinks after 6 steps without progress (a rate so small the network
/// barely learns: the loss wanders with the batches), `log_every` steps between reads.
fn plateau_run(dir: &Path, name: &str, log_every: u64) -> Vec<StepLoss> {
    let cfg = TrainConfig {
        schedule: ScheduleConfig::Plateau { patience: 6, shrink: 0.5, min_lr: 1e-30 },
        lr: 1e-7,
        ..config(dir, name, 40, log_every)
    };
    finished(
        Trainer::new(cfg, vec![], Default::default(), Box::new(SingleProcess), Default::default())
            .unwrap()
            .run()
            .unwrap(),
    );
    step_losses(&dir.join("Model").join(name))
}

/// The rate each step uses under dlib's rule fed `losses` one by one, the decision after step s
/// taken into account from step `s + 1` if s is a read point (`read_every`), else at the next read.
fn reference_rates(losses: &[StepLoss], read_every: u64) -> Vec<f64> {
    let mut rule = DlibPlateau { threshold: 6, shrink: 0.5, min_lr: 1e-30, ..DlibPlateau::new(1e-7) };
    let (mut rates, mut applied) = (Vec::new(), rule.lr);
    for l in losses {
        rates.push(applied);
        rule.observe(l.total);
        if l.step % read_every == 0 {
            applied = rule.lr;
        }
    }
    rates
}

#[test]
fn the_plateau_rule_with_log_every_1_decides_at_every_step_as_dlib_and_later_ones_at_the_next_read() {
    let _turn = facekit_testkit::rng_turn();
    let t = tempfile::tempdir().unwrap();
    SMALL_RAW_LFW.write(t.path());
    let every_step = plateau_run(t.path(), "every", 1);
    assert_eq!(every_step.len(), 40);
    let used: Vec<f64> = every_step.iter().map(|l| l.lr).collect();
    assert_eq!(used, reference_rates(&every_step, 1), "--log-every 1: the per-step rule's rates");
    assert!(used.iter().any(|&lr| lr < 1e-7), "the rate shrank in this run (else the test proves nothing): {used:?}");
    // Reading every 5 steps, each decision applies from the next read point on.
    let every_5 = plateau_run(t.path(), "every5", 5);
    let used_5: Vec<f64> = every_5.iter().map(|l| l.lr).collect();
    assert_eq!(used_5, reference_rates(&every_5, 5), "--log-every 5: each decision from the next read point on");
}
