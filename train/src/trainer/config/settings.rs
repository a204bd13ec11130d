//! The configuration as a list of settings, each named by the command-line flag that sets it
//! (`--momentum` for `optimizer.momentum`): what a resume tells the user it applied or refused,
//! and what ranks compare before they train together. A flag that sets several values of the
//! tree (`--multi-weights`, `--margin-values`) is one setting with the values joined as the flag
//! takes them.

use super::TrainConfig;
use anyhow::Result;
use serde_json::Value;

/// One setting: the id of the flag that sets it (`adam_betas`, clap's id, the field name of the
/// flat configuration of earlier versions) and its value as the command line writes it
/// (`0.9,0.999`; `none` when unset or when the configuration has no such value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The flag's id.
    pub flag: String,
    /// Where it lives in `config.json`: the first leaf's path (`optimizer.betas`).
    pub path: String,
    /// The value as the flag takes it.
    pub value: String,
}

/// The flags that choose a section's kind, and the flags of that kind's values: a resume that
/// refuses another kind names the kind alone, not each value that comes with it.
pub(crate) const SECTIONS: [(&str, &[&str]); 3] = [
    ("optimizer", &["momentum", "weight_decay", "adam_betas", "adam_eps"]),
    ("schedule", &["plateau_steps", "lr_shrink", "min_lr", "poly_power"]),
    ("margin", &["arcface_margin", "margin_values"]),
];

/// The settings of `cfg`, in the order of its fields.
pub fn settings(cfg: &TrainConfig) -> Result<Vec<Setting>> {
    Ok(of_value(&serde_json::to_value(cfg)?))
}

/// The settings of a configuration's JSON.
pub(crate) fn of_value(v: &Value) -> Vec<Setting> {
    let mut leaves = Vec::new();
    walk("", v, &mut leaves);
    let margin_kind = v.pointer("/head/margin/kind").and_then(Value::as_str).unwrap_or("arcface");
    let mut out: Vec<Setting> = Vec::new();
    for (path, value) in leaves {
        let flag = flag_id(&path, margin_kind);
        let value = shown(&value);
        match out.iter_mut().find(|s| s.flag == flag) {
            Some(s) => s.value = format!("{},{value}", s.value),
            None => out.push(Setting { flag, path, value }),
        }
    }
    out
}

/// The order of the values that one flag joins where key order would differ: `--multi-weights`
/// is fr,gender,age (the margin's m1,m2,m3 are in key order already).
const JOINED_ORDER: [&str; 3] = ["fr", "gender", "age"];

/// The leaves of a JSON tree with their dotted paths; arrays are leaves.
fn walk(prefix: &str, v: &Value, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(map) => {
            // JSON objects are read back in key order: the values a flag joins go in its order.
            let mut children: Vec<(&String, &Value)> = map.iter().collect();
            children.sort_by_key(|(k, _)| JOINED_ORDER.iter().position(|o| o == k));
            for (k, child) in children {
                let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                walk(&path, child, out);
            }
        }
        other => out.push((prefix.to_string(), other.clone())),
    }
}

/// The id of the flag that sets the value at `path` (`margin_kind`: the margin's kind, since
/// ArcFace's m has a flag of its own and the other kinds' values are `--margin-values`); a path
/// no flag sets is returned as it is.
pub fn flag_id(path: &str, margin_kind: &str) -> String {
    let id = match path {
        "optimizer.kind" => "optimizer",
        "optimizer.momentum" => "momentum",
        "optimizer.weight_decay" => "weight_decay",
        "optimizer.betas" => "adam_betas",
        "optimizer.eps" => "adam_eps",
        "schedule.kind" => "schedule",
        "schedule.patience" | "schedule.every" => "plateau_steps",
        "schedule.shrink" => "lr_shrink",
        "schedule.min_lr" => "min_lr",
        "schedule.power" => "poly_power",
        "warmup.steps" => "warmup_steps",
        "warmup.epochs" => "warmup_epochs",
        "head.scale" => "arcface_scale",
        "head.margin.kind" => "margin",
        "head.margin.m" if margin_kind == "arcface" => "arcface_margin",
        p if p.starts_with("head.margin.") => "margin_values",
        "head.partial_fc" => "partial_fc",
        p if p.starts_with("head.task_weights.") => "multi_weights",
        other => other,
    };
    id.to_string()
}

/// A flag as the user types it: `log_every` is `--log-every`, `task` the positional TASK.
pub(crate) fn flag_name(id: &str) -> String {
    if id == "task" {
        "TASK".into()
    } else {
        format!("--{}", id.replace('_', "-"))
    }
}

/// The kind flag whose section holds `flag` (`optimizer` for `momentum`), if any.
pub(crate) fn section_of(flag: &str) -> Option<&'static str> {
    SECTIONS.iter().find(|(_, members)| members.contains(&flag)).map(|(kind, _)| *kind)
}

/// A value as the command line writes it.
fn shown(v: &Value) -> String {
    match v {
        Value::Null => "none".into(),
        Value::Array(a) if a.is_empty() => "none".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(shown).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trainer::config::{Margin, OptimizerConfig};

    fn find(s: &[Setting], flag: &str) -> Option<String> {
        s.iter().find(|x| x.flag == flag).map(|x| x.value.clone())
    }

    #[test]
    fn every_value_of_the_tree_is_named_by_its_flag() {
        let mut cfg = TrainConfig { optimizer: OptimizerConfig::adamw(0.05), ..TrainConfig::default() };
        cfg.head.margin = Margin::Combined { m1: 1.0, m2: 0.3, m3: 0.2 };
        cfg.head.task_weights.gender = 0.5;
        let s = settings(&cfg).unwrap();
        assert_eq!(find(&s, "optimizer").as_deref(), Some("adamw"));
        assert_eq!(find(&s, "adam_betas").as_deref(), Some("0.9,0.999"));
        assert_eq!(find(&s, "weight_decay").as_deref(), Some("0.05"));
        assert_eq!(find(&s, "momentum"), None);
        assert_eq!(find(&s, "margin_values").as_deref(), Some("1.0,0.3,0.2"));
        assert_eq!(find(&s, "multi_weights").as_deref(), Some("1.0,0.5,1.0"));
        assert_eq!(find(&s, "plateau_steps").as_deref(), Some("2000"));
        assert_eq!(find(&s, "warmup_steps").as_deref(), Some("0"));
        assert_eq!(find(&s, "log_every").as_deref(), Some("50"));
        // Every flag is named once: no leaf is left under a path of its own.
        assert!(s.iter().all(|x| !x.flag.contains('.')), "{s:?}");
        let arcface = settings(&TrainConfig::default()).unwrap();
        assert_eq!(find(&arcface, "arcface_margin").as_deref(), Some("0.5"));
        assert_eq!(find(&arcface, "margin_values"), None);
    }
}
