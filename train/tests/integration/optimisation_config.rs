//! The optimisation settings' checks: each value out of range is refused before a run starts,
//! with a message naming its flag. A combination that means nothing (AdamW's betas on SGD, a
//! cosine margin with an angle) cannot be written in the configuration tree at all; the command
//! line refuses such flags (tests/cli/train_loop.rs). Old `config.json` files, flat and without
//! the newer fields, load into the tree with the behaviour they had.

use facekit_train::loss::{HeadConfig, Margin};
use facekit_train::model::Task;
use facekit_train::trainer::config::{OptimizerConfig, SavedConfig, ScheduleConfig, Warmup};
use facekit_train::TrainConfig;

fn refused(cfg: TrainConfig, words: &[&str]) {
    let err = format!("{:#}", cfg.validate().expect_err("must be refused"));
    for w in words {
        assert!(err.contains(w), "message lacks '{w}': {err}");
    }
}

fn adamw(betas: [f64; 2], eps: f64) -> TrainConfig {
    TrainConfig { optimizer: OptimizerConfig::Adamw { betas, eps, weight_decay: 0.05 }, ..TrainConfig::default() }
}

fn schedule(schedule: ScheduleConfig) -> TrainConfig {
    TrainConfig { schedule, ..TrainConfig::default() }
}

fn head(head: HeadConfig) -> TrainConfig {
    TrainConfig { head, ..TrainConfig::default() }
}

#[test]
fn optimisation_values_out_of_range_are_refused_by_flag() {
    TrainConfig::default().validate().unwrap();
    adamw([0.9, 0.999], 1e-8).validate().unwrap();
    refused(adamw([0.9, 1.0], 1e-8), &["--adam-betas", "[0, 1)"]);
    refused(adamw([-0.1, 0.99], 1e-8), &["--adam-betas"]);
    refused(adamw([0.9, 0.999], 0.0), &["--adam-eps"]);
    let sgd = |momentum, weight_decay| TrainConfig {
        optimizer: OptimizerConfig::Sgd { momentum, weight_decay },
        ..TrainConfig::default()
    };
    refused(sgd(1.0, 5e-4), &["--momentum", "[0, 1)"]);
    refused(sgd(f64::NAN, 5e-4), &["--momentum"]);
    refused(sgd(0.9, -1.0), &["--weight-decay"]);
    let poly = schedule(ScheduleConfig::poly());
    refused(poly.clone(), &["--schedule poly needs --max-steps or --epochs"]);
    TrainConfig { epochs: Some(3), ..poly.clone() }.validate().unwrap();
    refused(TrainConfig { max_steps: Some(9), ..schedule(ScheduleConfig::Poly { power: 0.0 }) }, &["--poly-power"]);
    refused(schedule(ScheduleConfig::Cosine { min_lr: 0.0 }), &["--schedule cosine needs --max-steps or --epochs"]);
    refused(schedule(ScheduleConfig::Plateau { patience: 0, shrink: 0.1, min_lr: 0.0 }), &["--plateau-steps"]);
    refused(schedule(ScheduleConfig::Step { every: 5, shrink: 0.0, min_lr: 0.0 }), &["--lr-shrink"]);
    refused(schedule(ScheduleConfig::Plateau { patience: 5, shrink: 0.1, min_lr: 0.5 }), &["--min-lr", "below --lr"]);
    refused(TrainConfig { clip_grad_norm: Some(0.0), ..TrainConfig::default() }, &["--clip-grad-norm"]);
    refused(TrainConfig { clip_grad_norm: Some(f64::NAN), ..TrainConfig::default() }, &["--clip-grad-norm"]);
    TrainConfig { clip_grad_norm: Some(5.0), ..TrainConfig::default() }.validate().unwrap();
    // A warm-up is in steps or in epochs, never both: the tree has one of the two.
    TrainConfig { warmup: Warmup::Epochs(1), ..TrainConfig::default() }.validate().unwrap();
}

#[test]
fn head_values_out_of_range_are_refused_by_flag() {
    let d = HeadConfig::default();
    assert_eq!(d.margin, Margin::arcface(0.5));
    refused(head(HeadConfig { margin: Margin::Combined { m1: 0.5, m2: 0.3, m3: 0.2 }, ..d }), &["m1"]);
    refused(head(HeadConfig { margin: Margin::arcface(2.0), ..d }), &["--arcface-margin", "m2", "pi/2"]);
    refused(head(HeadConfig { margin: Margin::arcface(f64::NAN), ..d }), &["--arcface-margin"]);
    refused(head(HeadConfig { margin: Margin::Cosface { m: 1.0 }, ..d }), &["--margin cosface", "m3"]);
    refused(head(HeadConfig { scale: 0.0, ..d }), &["--arcface-scale"]);
    refused(head(HeadConfig { partial_fc: Some(1.5), ..d }), &["--partial-fc", "(0, 1]"]);
    let gender = TrainConfig { task: Task::Gender, ..head(HeadConfig { partial_fc: Some(0.5), ..d }) };
    refused(gender, &["--partial-fc", "gender"]);
    let mut nothing = TrainConfig { task: Task::Multi, ..TrainConfig::default() };
    nothing.head.task_weights = facekit_train::loss::TaskWeights { fr: 0.0, gender: 0.0, age: 0.0 };
    refused(nothing, &["--multi-weights are all zero"]);
}

#[test]
fn a_flat_config_json_from_before_these_settings_loads_as_sgd_arcface() {
    // The oldest runs' config.json: flat, and without the optimiser, margin, AdamW, poly,
    // warm-up-in-epochs and clipping fields that later versions added.
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/assets/runs/x86_64/fr_sgd_plateau_fp32/run/config.json");
    let mut saved: serde_json::Value = serde_json::from_slice(&std::fs::read(fixture).unwrap()).unwrap();
    let config = saved["config"].as_object_mut().unwrap();
    for k in [
        "margin",
        "margin_values",
        "optimizer",
        "adam_betas",
        "adam_eps",
        "poly_power",
        "warmup_epochs",
        "clip_grad_norm",
    ] {
        assert!(config.remove(k).is_some(), "{k} is saved");
    }
    let run = tempfile::tempdir().unwrap();
    let paths = facekit_train::run::paths::RunPaths::new(run.path());
    std::fs::write(paths.config(), serde_json::to_vec(&saved).unwrap()).unwrap();
    let old = SavedConfig::read(&paths).unwrap().config;
    assert_eq!(old.optimizer, OptimizerConfig::default());
    assert_eq!(old.head, HeadConfig::default());
    assert_eq!(old.schedule, ScheduleConfig::Plateau { patience: 3, shrink: 0.5, min_lr: 1e-5 });
    assert_eq!(old.clip_grad_norm, None);
    old.validate().unwrap();
}
