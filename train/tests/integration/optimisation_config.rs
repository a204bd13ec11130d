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
    refused(TrainConfig { warmup_epochs: Some(1), warmup_steps: 100, ..TrainConfig::default() }, &["--warmup-epochs", "--warmup-steps"]);
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
    for k in ["margin", "margin_values", "optimizer", "adam_betas", "adam_eps", "poly_power", "warmup_epochs", "clip_grad_norm"] {
        assert!(obj.remove(k).is_some(), "{k} is saved");
    }
    let old: TrainConfig = serde_json::from_value(v).unwrap();
    assert_eq!(old, TrainConfig::default());
}
