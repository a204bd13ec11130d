//! The flat `config.json` of earlier versions (every flag a field of its own: `optimizer`,
//! `momentum`, `adam_betas`, `schedule`, `plateau_steps`, `margin`, `margin_values`, ...), read
//! into the tree, so that a run folder written before the tree resumes as it would have then
//! (`tests/assets/runs/`). The flat fields are read with the defaults those versions gave the
//! ones they did not always write.

use super::{HeadConfig, Margin, OptimizerConfig, OptimizerKind, ScheduleConfig, ScheduleKind, TaskWeights, Warmup};
use crate::loss::MarginKind;
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_json::Value;

/// The flat fields that the tree holds in its sections; every other field is the same in both.
#[derive(Debug, Deserialize)]
struct Flat {
    #[serde(default)]
    optimizer: OptimizerKind,
    momentum: f64,
    weight_decay: f64,
    #[serde(default = "adam_betas")]
    adam_betas: Vec<f64>,
    #[serde(default = "adam_eps")]
    adam_eps: f64,
    schedule: ScheduleKind,
    plateau_steps: u64,
    lr_shrink: f64,
    min_lr: f64,
    #[serde(default = "poly_power")]
    poly_power: f64,
    warmup_steps: u64,
    #[serde(default)]
    warmup_epochs: Option<u64>,
    arcface_scale: f64,
    arcface_margin: f64,
    #[serde(default)]
    margin: MarginKind,
    #[serde(default)]
    margin_values: Option<Vec<f64>>,
    #[serde(default)]
    partial_fc: Option<f64>,
    multi_weights: Vec<f64>,
}

/// The fields [`Flat`] reads, which the tree replaces by its sections.
const FLAT_FIELDS: [&str; 20] = [
    "optimizer",
    "momentum",
    "weight_decay",
    "adam_betas",
    "adam_eps",
    "schedule",
    "plateau_steps",
    "lr_shrink",
    "min_lr",
    "poly_power",
    "warmup_steps",
    "warmup_epochs",
    "arcface_scale",
    "arcface_margin",
    "margin",
    "margin_values",
    "partial_fc",
    "multi_weights",
    // Written by no version, but refused rather than dropped if a hand-edited file has them.
    "head",
    "warmup",
];

/// Whether `config` (the `config` object of a `config.json`) is the flat configuration: its
/// schedule is a name where the tree has a section.
pub(crate) fn is_flat(config: &Value) -> bool {
    config.get("schedule").is_some_and(Value::is_string)
}

/// The tree configuration that the flat `config` stands for.
pub(crate) fn upgrade(config: &Value) -> Result<Value> {
    let flat: Flat = serde_json::from_value(config.clone()).context("the flat configuration of an earlier version")?;
    let Value::Object(mut map) = config.clone() else { bail!("the configuration is not a JSON object") };
    if map.contains_key("head") || map.contains_key("warmup") {
        bail!("the configuration mixes the flat fields of earlier versions with the sections of this one");
    }
    for field in FLAT_FIELDS {
        map.remove(field);
    }
    let optimizer = match flat.optimizer {
        OptimizerKind::Sgd => OptimizerConfig::Sgd { momentum: flat.momentum, weight_decay: flat.weight_decay },
        OptimizerKind::Adamw => {
            let [b1, b2] = flat.adam_betas[..] else {
                bail!("adam_betas needs two numbers, got {:?}", flat.adam_betas)
            };
            OptimizerConfig::Adamw { betas: [b1, b2], eps: flat.adam_eps, weight_decay: flat.weight_decay }
        }
    };
    let schedule = match flat.schedule {
        ScheduleKind::Plateau => {
            ScheduleConfig::Plateau { patience: flat.plateau_steps, shrink: flat.lr_shrink, min_lr: flat.min_lr }
        }
        ScheduleKind::Step => {
            ScheduleConfig::Step { every: flat.plateau_steps, shrink: flat.lr_shrink, min_lr: flat.min_lr }
        }
        ScheduleKind::Cosine => ScheduleConfig::Cosine { min_lr: flat.min_lr },
        ScheduleKind::Poly => ScheduleConfig::Poly { power: flat.poly_power },
    };
    let warmup = flat.warmup_epochs.map_or(Warmup::Steps(flat.warmup_steps), Warmup::Epochs);
    let [fr, gender, age] = flat.multi_weights[..] else {
        bail!("multi_weights needs three numbers, got {:?}", flat.multi_weights)
    };
    let head = HeadConfig {
        scale: flat.arcface_scale,
        margin: margin(flat.margin, flat.margin_values.as_deref(), flat.arcface_margin)?,
        partial_fc: flat.partial_fc,
        task_weights: TaskWeights { fr, gender, age },
    };
    map.insert("optimizer".into(), serde_json::to_value(optimizer)?);
    map.insert("schedule".into(), serde_json::to_value(schedule)?);
    map.insert("warmup".into(), serde_json::to_value(warmup)?);
    map.insert("head".into(), serde_json::to_value(head)?);
    Ok(Value::Object(map))
}

/// The margin the flat `margin`, `margin_values` and `arcface_margin` described, as those
/// versions read them.
fn margin(kind: MarginKind, values: Option<&[f64]>, arcface_margin: f64) -> Result<Margin> {
    match (values, kind) {
        (Some(&[m1, m2, m3]), kind) => Margin::from_values(kind, m1, m2, m3),
        (Some(v), _) => bail!("margin_values needs three numbers, got {v:?}"),
        (None, MarginKind::Arcface) => Ok(Margin::Arcface { m: arcface_margin }),
        (None, MarginKind::Cosface) => Ok(Margin::Cosface { m: 0.4 }),
        (None, MarginKind::Combined) => bail!("the combined margin needs margin_values"),
    }
}

/// PyTorch's AdamW betas, the flat configuration's default.
fn adam_betas() -> Vec<f64> {
    vec![0.9, 0.999]
}

/// PyTorch's AdamW eps, the flat configuration's default.
fn adam_eps() -> f64 {
    1e-8
}

/// arcface_torch's `PolynomialLRWarmup` power, the flat configuration's default.
fn poly_power() -> f64 {
    1.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trainer::config::TrainConfig;

    /// The `config` of each old run folder in tests/assets/runs, read as the tree.
    fn old(name: &str) -> TrainConfig {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/assets/runs/x86_64")
            .join(name)
            .join("run/config.json");
        let saved: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert!(is_flat(&saved["config"]), "{} is the flat configuration", path.display());
        serde_json::from_value(upgrade(&saved["config"]).unwrap()).unwrap()
    }

    #[test]
    fn the_flat_configurations_of_old_run_folders_read_into_the_tree() {
        let sgd = old("fr_sgd_plateau_fp32");
        assert_eq!(sgd.optimizer, OptimizerConfig::Sgd { momentum: 0.9, weight_decay: 5e-4 });
        assert_eq!(sgd.schedule, ScheduleConfig::Plateau { patience: 3, shrink: 0.5, min_lr: 1e-5 });
        assert_eq!(sgd.warmup, Warmup::Steps(2));
        assert_eq!(sgd.head, HeadConfig::default());
        assert_eq!(sgd.lr, 0.05);
        assert_eq!(sgd.embedding_size, 32);

        let adamw = old("fr_adamw_cosine_combined_fp32");
        assert_eq!(adamw.optimizer, OptimizerConfig::Adamw { betas: [0.85, 0.99], eps: 1e-7, weight_decay: 0.05 });
        assert_eq!(adamw.schedule, ScheduleConfig::Cosine { min_lr: 1e-4 });
        assert_eq!(adamw.warmup, Warmup::Steps(3));
        assert_eq!(adamw.head.margin, Margin::Combined { m1: 1.0, m2: 0.3, m3: 0.2 });
        assert_eq!(adamw.head.scale, 32.0);
        assert_eq!(adamw.clip_grad_norm, Some(5.0));

        let multi = old("multi_sgd_poly_cosface_pfc_bf16");
        assert_eq!(multi.optimizer, OptimizerConfig::Sgd { momentum: 0.8, weight_decay: 0.001 });
        assert_eq!(multi.schedule, ScheduleConfig::Poly { power: 2.0 });
        assert_eq!(multi.head.margin, Margin::Cosface { m: 0.35 });
        assert_eq!(multi.head.partial_fc, Some(0.5));
        assert_eq!(multi.head.task_weights, TaskWeights { fr: 1.0, gender: 0.5, age: 0.25 });
    }

    #[test]
    fn the_flat_defaults_of_the_oldest_versions_fill_what_they_did_not_write() {
        // The first versions wrote neither the optimiser, the margin nor the warm-up in epochs.
        let mut flat = serde_json::to_value(TrainConfig::default()).unwrap();
        let map = flat.as_object_mut().unwrap();
        for field in ["optimizer", "schedule", "warmup", "head"] {
            map.remove(field);
        }
        for (k, v) in [
            ("momentum", serde_json::json!(0.9)),
            ("weight_decay", serde_json::json!(5e-4)),
            ("schedule", serde_json::json!("step")),
            ("plateau_steps", serde_json::json!(100)),
            ("lr_shrink", serde_json::json!(0.1)),
            ("min_lr", serde_json::json!(1e-5)),
            ("warmup_steps", serde_json::json!(0)),
            ("arcface_scale", serde_json::json!(64.0)),
            ("arcface_margin", serde_json::json!(0.4)),
            ("multi_weights", serde_json::json!([1.0, 1.0, 1.0])),
        ] {
            map.insert(k.into(), v);
        }
        let tree: TrainConfig = serde_json::from_value(upgrade(&flat).unwrap()).unwrap();
        assert_eq!(tree.optimizer, OptimizerConfig::default());
        assert_eq!(tree.schedule, ScheduleConfig::Step { every: 100, shrink: 0.1, min_lr: 1e-5 });
        assert_eq!(tree.head.margin, Margin::arcface(0.4));
        // A flat file whose margin values do not fit its kind is refused, naming them.
        flat["margin"] = serde_json::json!("arcface");
        flat["margin_values"] = serde_json::json!([1.0, 0.5, 0.2]);
        let e = format!("{:#}", upgrade(&flat).unwrap_err());
        assert!(e.contains("m3 = 0"), "{e}");
    }
}
