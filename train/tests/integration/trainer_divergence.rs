//! A loss that becomes NaN ends the run as a divergence: the step is not applied, `last` keeps the
//! last good checkpoint, and a resume from it continues as if nothing had happened. The NaN comes
//! from the trainer's fault injection for tests ([`Trainer::with_nan_loss_at_step`]); trained with
//! the tiny network on the CPU on the command line's test set (`CLI_LFW`: 10 LFW identities, 24
//! photos each, 48 px JPEG), so that 240 records / 16 = 15 batches make an epoch. How the command line reports
//! a divergence (its message, exit code 1) is tested in `tests/cli` on divergences of validation,
//! which need no injection.

use facekit_testkit::runs::step_losses;
use facekit_testkit::sets::CLI_LFW;
use facekit_train::loss::{HeadConfig, Margin};
use facekit_train::model::{Arch, Task};
use facekit_train::run::paths::{RunPaths, LAST, MODEL_FILE, OPTIMIZER_FILE, STATE_FILE};
use facekit_train::trainer::config::{OptimizerConfig, ScheduleConfig, Warmup};
use facekit_train::trainer::{Outcome, SingleProcess, TrainConfig, Trainer};
use std::path::Path;

/// What the command line's tests give every run (`--arch tiny --image-size 48 --batch-size 16
/// --workers 2 --device cpu`), on the set in `dir`, the run named `name`.
fn config(dir: &Path, name: &str) -> TrainConfig {
    TrainConfig {
        task: Task::Fr,
        train_sets: vec!["lfw".into()],
        data_dir: dir.to_path_buf(),
        arch: Arch::Tiny,
        image_size: CLI_LFW.storage.side,
        batch_size: 16,
        workers: 2,
        device: "cpu".into(),
        model_dir: dir.join("Model"),
        run_name: Some(name.into()),
        ..TrainConfig::default()
    }
}

fn run(cfg: TrainConfig, nan_at: Option<u64>) -> Outcome {
    let trainer = Trainer::new(cfg, vec![], Default::default(), Box::new(SingleProcess), Default::default()).unwrap();
    let trainer = match nan_at {
        Some(step) => trainer.with_nan_loss_at_step(step),
        None => trainer,
    };
    trainer.run().unwrap()
}

fn finished(outcome: Outcome) {
    assert!(matches!(outcome, Outcome::Finished(_)), "{outcome:?}");
}

/// (step, total loss) of every row of the run's `loss_debug/losses.tsv`.
fn losses(run: &Path) -> Vec<(u64, f64)> {
    step_losses(run).iter().map(|l| (l.step, l.total)).collect()
}

fn state(run: &Path, which: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(RunPaths::new(run).checkpoint(which).join(STATE_FILE)).unwrap()).unwrap()
}

#[test]
fn a_nan_loss_ends_the_run_as_diverged_without_the_step_and_keeps_the_last_good_checkpoint() {
    let _turn = facekit_testkit::rng_turn();
    let t = tempfile::tempdir().unwrap();
    CLI_LFW.write(t.path());
    let cfg = TrainConfig { max_steps: Some(30), checkpoint_every: 5, ..config(t.path(), "nan") };
    let Outcome::Diverged { step, cause, summary } = run(cfg, Some(8)) else { panic!("the NaN at step 8 was missed") };
    assert_eq!(step, 8);
    assert!(cause.contains("NaN"), "{cause}");
    assert_eq!(summary.last_checkpoint, Some(5), "the last good checkpoint is named");
    let run = t.path().join("Model/nan");
    assert_eq!(state(&run, LAST)["step"], 5);
    assert_eq!(losses(&run).len(), 7, "steps 1..7 logged, the NaN step not");
}

#[test]
fn a_divergence_before_any_checkpoint_has_no_last_checkpoint() {
    let _turn = facekit_testkit::rng_turn();
    let t = tempfile::tempdir().unwrap();
    CLI_LFW.write(t.path());
    let cfg = TrainConfig { max_steps: Some(5), ..config(t.path(), "nan") };
    let Outcome::Diverged { step, summary, .. } = run(cfg, Some(2)) else { panic!("the NaN at step 2 was missed") };
    assert_eq!((step, summary.last_checkpoint), (2, None));
    assert!(!RunPaths::new(t.path().join("Model/nan")).checkpoint(LAST).exists());
}

#[test]
fn adamw_poly_clipped_resumed_run_reproduces_the_uninterrupted_run_bit_for_bit() {
    let _turn = facekit_testkit::rng_turn();
    let t = tempfile::tempdir().unwrap();
    CLI_LFW.write(t.path());
    // The poly schedule's length is fixed when a run starts, so the split run is planned for 40
    // steps too and broken off after 20 by the NaN injected into step 21 (not applied; `last`
    // holds step 20). 15 batches per epoch: the warm-up is steps 1-15, the break in epoch 2.
    let planned = |name: &str| TrainConfig {
        optimizer: OptimizerConfig::adamw(0.1),
        lr: 0.002,
        schedule: ScheduleConfig::poly(),
        warmup: Warmup::Epochs(1),
        clip_grad_norm: Some(5.0),
        head: HeadConfig { margin: Margin::Cosface { m: 0.4 }, ..HeadConfig::default() },
        dropout: 0.2,
        checkpoint_every: 20,
        log_every: 5,
        max_steps: Some(40),
        ..config(t.path(), name)
    };
    finished(run(planned("full"), None));
    let broken = run(planned("split"), Some(21));
    assert!(matches!(broken, Outcome::Diverged { step: 21, .. }), "{broken:?}");
    let (full, split) = (t.path().join("Model/full"), t.path().join("Model/split"));
    assert_eq!(state(&split, LAST)["step"], 20);
    // As `facekit train FR --train-sets lfw --resume split --max-steps 40 --log-every 5` with the
    // common flags: every other setting is the run's own.
    let resume = TrainConfig {
        resume: Some("split".into()),
        run_name: None,
        max_steps: Some(40),
        log_every: 5,
        ..config(t.path(), "split")
    };
    finished(run(resume, None));
    let (a, b) = (losses(&full), losses(&split));
    assert_eq!((a.len(), b.len()), (40, 40));
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x, y, "step {}: uninterrupted loss {} but resumed {}", x.0, x.1, y.1);
    }
    for file in [MODEL_FILE, OPTIMIZER_FILE] {
        let read = |run: &Path| std::fs::read(RunPaths::new(run).checkpoint(LAST).join(file)).unwrap();
        assert!(read(&full) == read(&split), "checkpoints/last/{file} differs after the resumed run");
    }
    assert_eq!(state(&full, LAST)["schedule"], state(&split, LAST)["schedule"]);
    assert_eq!(state(&full, LAST)["schedule"]["kind"], "warmup");
    assert_eq!(state(&full, LAST)["schedule"]["inner"]["kind"], "poly");
    // The pre-clip norm is logged with the progress lines, the same in both runs.
    let norms = |run: &Path| -> Vec<f64> {
        std::fs::read_to_string(RunPaths::new(run).log())
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["grad_norm"].as_f64())
            .collect()
    };
    assert_eq!(norms(&full).len(), 8, "every 5 steps");
    assert!(norms(&full).iter().all(|n| n.is_finite() && *n > 0.0));
    assert_eq!(norms(&full), norms(&split));
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(RunPaths::new(&full).config()).unwrap()).unwrap();
    assert_eq!(saved["config"]["head"]["margin"], serde_json::json!({"kind": "cosface", "m": 0.4}));
    assert_eq!(saved["config"]["optimizer"]["kind"], "adamw");
}
