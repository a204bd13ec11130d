//! The optimisation settings' checks: each wrong combination is refused before a run starts,
//! with a message naming the flag; old `config.json` files (without the new fields) load with
//! today's behaviour.

use facekit_train::loss::{Margin, MarginKind};
use facekit_train::trainer::config::{OptimizerKind, ScheduleKind};
use facekit_train::TrainConfig;

fn refused(cfg: TrainConfig, words: &[&str]) {
    let err = cfg.validate().expect_err("must be refused").to_string();
    for w in words {
        assert!(err.contains(w), "message lacks '{w}': {err}");
    }
}

fn adamw() -> TrainConfig {
    TrainConfig { optimizer: OptimizerKind::Adamw, ..TrainConfig::default() }
}

#[test]
fn wrong_optimisation_settings_are_refused_by_name() {
    TrainConfig::default().validate().unwrap();
    adamw().validate().unwrap();
    refused(TrainConfig { adam_betas: vec![0.9, 1.0], ..adamw() }, &["--adam-betas", "[0, 1)"]);
    refused(TrainConfig { adam_betas: vec![0.9], ..adamw() }, &["--adam-betas", "two numbers"]);
    refused(TrainConfig { adam_betas: vec![-0.1, 0.99], ..adamw() }, &["--adam-betas"]);
    refused(TrainConfig { adam_eps: 0.0, ..adamw() }, &["--adam-eps"]);
    refused(TrainConfig { momentum: 0.5, ..adamw() }, &["--momentum", "--adam-betas"]);
    refused(TrainConfig { adam_betas: vec![0.8, 0.99], ..TrainConfig::default() }, &["--optimizer adamw only"]);
    let poly = TrainConfig { schedule: ScheduleKind::Poly, ..TrainConfig::default() };
    refused(poly.clone(), &["--schedule poly needs --max-steps or --epochs"]);
    TrainConfig { epochs: Some(3), ..poly.clone() }.validate().unwrap();
    refused(TrainConfig { max_steps: Some(9), poly_power: 0.0, ..poly }, &["--poly-power"]);
    refused(TrainConfig { poly_power: 2.0, ..TrainConfig::default() }, &["--poly-power applies to --schedule poly"]);
    refused(
        TrainConfig { warmup_epochs: Some(1), warmup_steps: 100, ..TrainConfig::default() },
        &["--warmup-epochs", "--warmup-steps"],
    );
    refused(TrainConfig { clip_grad_norm: Some(0.0), ..TrainConfig::default() }, &["--clip-grad-norm"]);
    refused(TrainConfig { clip_grad_norm: Some(f64::NAN), ..TrainConfig::default() }, &["--clip-grad-norm"]);
    TrainConfig { clip_grad_norm: Some(5.0), ..TrainConfig::default() }.validate().unwrap();
}

#[test]
fn margins_take_their_defaults_and_refuse_values_that_do_not_fit() {
    let d = TrainConfig::default();
    assert_eq!(d.margin_spec().unwrap(), Margin::arcface(0.5));
    assert_eq!(TrainConfig { arcface_margin: 0.4, ..d.clone() }.margin_spec().unwrap(), Margin::arcface(0.4));
    let cosface = TrainConfig { margin: MarginKind::Cosface, ..d.clone() };
    assert_eq!(cosface.margin_spec().unwrap(), Margin { kind: MarginKind::Cosface, m1: 1.0, m2: 0.0, m3: 0.4 });
    let combined = TrainConfig { margin: MarginKind::Combined, ..d.clone() };
    refused(combined.clone(), &["--margin combined needs --margin-values"]);
    let values = TrainConfig { margin_values: Some(vec![1.0, 0.3, 0.2]), ..combined };
    assert_eq!(values.margin_spec().unwrap(), Margin { kind: MarginKind::Combined, m1: 1.0, m2: 0.3, m3: 0.2 });
    refused(TrainConfig { margin_values: Some(vec![1.0, 0.3]), ..values.clone() }, &["three numbers"]);
    refused(TrainConfig { margin_values: Some(vec![0.5, 0.3, 0.2]), ..values.clone() }, &["m1"]);
    refused(TrainConfig { margin_values: Some(vec![1.0, 0.3, 0.2]), ..cosface }, &["--margin cosface", "m2 = 0"]);
    refused(TrainConfig { margin_values: Some(vec![1.0, 0.5, 0.2]), ..d.clone() }, &["--margin arcface", "m3 = 0"]);
    refused(TrainConfig { margin_values: Some(vec![1.0, 2.0, 0.0]), ..d }, &["m2", "pi/2"]);
}

#[test]
fn a_config_json_from_before_these_settings_loads_as_sgd_arcface() {
    let mut v = serde_json::to_value(TrainConfig::default()).unwrap();
    let obj = v.as_object_mut().unwrap();
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
        assert!(obj.remove(k).is_some(), "{k} is saved");
    }
    let old: TrainConfig = serde_json::from_value(v).unwrap();
    assert_eq!(old, TrainConfig::default());
}

#[test]
fn a_resume_applies_given_settings_that_may_change_refuses_the_others_and_keeps_the_rest() {
    let saved = TrainConfig {
        lr: 0.05,
        log_every: 5,
        max_steps: Some(10),
        epochs: Some(3),
        device: "cpu".into(),
        ..TrainConfig::default()
    };
    let resume = |given: &[&str], cfg: TrainConfig| TrainConfig {
        resume: Some("r".into()),
        given: given.iter().map(|g| g.to_string()).collect(),
        ..cfg
    };
    // Nothing given: the saved settings, not the defaults (log every 5, on the CPU).
    let (merged, changed) = resume(&[], TrainConfig::default()).resumed(&saved).unwrap();
    assert_eq!((merged.log_every, merged.device.as_str(), merged.lr, merged.max_steps), (5, "cpu", 0.05, Some(10)));
    assert!(changed.is_empty(), "{changed:?}");
    // Given, even at its default value: applied; the run's length is taken whole.
    let (merged, changed) =
        resume(&["log_every", "max_steps"], TrainConfig { max_steps: Some(20), ..TrainConfig::default() })
            .resumed(&saved)
            .unwrap();
    assert_eq!((merged.log_every, merged.max_steps, merged.epochs), (50, Some(20), None));
    assert_eq!(changed, ["--epochs none (was 3)", "--log-every 50 (was 5)", "--max-steps 20 (was 10)"]);
    // What the run learns from: refused by name when it differs, accepted when it is the same.
    let err =
        resume(&["lr"], TrainConfig { lr: 0.1, ..TrainConfig::default() }).resumed(&saved).unwrap_err().to_string();
    assert!(err.contains("--lr 0.1 (the run's: 0.05) cannot change when a run is resumed"), "{err}");
    let err = resume(&[], TrainConfig { schedule: ScheduleKind::Cosine, ..TrainConfig::default() })
        .resumed(&saved)
        .unwrap_err()
        .to_string();
    assert!(err.contains("--schedule cosine (the run's: plateau)"), "a setting off its default counts as given: {err}");
    resume(&["lr"], TrainConfig { lr: 0.05, ..TrainConfig::default() }).resumed(&saved).unwrap();
    // --allow-changed-data is this resume's decision alone.
    let sticky = TrainConfig { allow_changed_data: true, ..saved.clone() };
    assert!(!resume(&[], TrainConfig::default()).resumed(&sticky).unwrap().0.allow_changed_data);
}
