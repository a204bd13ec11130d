//! `facekit train --config FILE`: a TOML file of settings, read into the command line before clap
//! parses it, so that the file and the flags go through one mapping (`train_config.rs`) and one
//! set of checks. A flag given on the command line overrides the file: the file's value of that
//! flag, and of any flag clap says conflicts with it, is left out.
//!
//! A file's keys are, in any mix:
//! - facekit's own settings by their flag's name (`arch = "iresnet50"`, `clip_grad_norm = 5`,
//!   `train_sets = ["ms1mv3"]`), flat or as the sections of the configuration tree
//!   (`[optimizer]` `kind = "sgd"`, `momentum = 0.9`), which is what `--print-config` writes;
//! - insightface arcface_torch's config names (`network`, `margin_list`, `sample_rate`, `fp16`,
//!   `num_epoch`, `warmup_epoch`, `rec`, `val_targets`, ...), read as arcface_torch reads its
//!   `configs/*.py`: over `configs/base.py`'s values, with what `train_v2.py` fixes itself (112
//!   pixels, the poly schedule, clipping at 5, the sharded head). A facekit key given in the
//!   same file wins over what an arcface_torch key implies.
//!
//! An unknown key, a value of the wrong type, or an arcface_torch setting facekit cannot honour
//! is an error naming the file and the key.

use anyhow::{bail, Context, Result};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use toml::Value;

/// The arguments with those of `train --config FILE` after the user's (at the end, where a
/// list flag cannot take the user's positional TASK as one of its values), less the flags the
/// user gave.
pub fn expand(mut args: Vec<OsString>) -> Result<Vec<OsString>> {
    let Some(train) = args.iter().skip(1).position(|a| a == "train").map(|i| i + 1) else { return Ok(args) };
    let Some(file) = config_path(&args[train + 1..])? else { return Ok(args) };
    let command = train_command();
    let given = given_ids(&command, &args[train + 1..]);
    let from_file = file_args(&file, &command, &given).with_context(|| format!("--config {}", file.display()))?;
    args.extend(from_file);
    Ok(args)
}

/// The ids of the flags among `args` (by their long names or aliases).
fn given_ids(command: &clap::Command, args: &[OsString]) -> Vec<String> {
    args.iter()
        .filter_map(|a| a.to_str()?.strip_prefix("--"))
        .map(|a| a.split('=').next().unwrap_or(a))
        .filter_map(|name| {
            command.get_arguments().find(|arg| {
                arg.get_long() == Some(name) || arg.get_all_aliases().is_some_and(|aliases| aliases.contains(&name))
            })
        })
        .map(|arg| arg.get_id().to_string())
        .collect()
}

/// The value of `--config` among `train`'s arguments, if given (once).
fn config_path(args: &[OsString]) -> Result<Option<PathBuf>> {
    let mut found = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let value = match a.to_str() {
            Some("--config") => it.next().cloned(),
            Some(s) if s.starts_with("--config=") => Some(OsString::from(&s["--config=".len()..])),
            _ => continue,
        };
        let Some(value) = value else { return Ok(None) }; // clap reports the missing value
        if found.replace(PathBuf::from(value)).is_some() {
            bail!("--config is given twice: give one file (flags on the command line override it)");
        }
    }
    Ok(found)
}

/// The command-line arguments the file `path` stands for, but those of the flags in `given` and
/// of the flags that conflict with them (the command line wins).
fn file_args(path: &Path, train: &clap::Command, given: &[String]) -> Result<Vec<OsString>> {
    let text = facekit_io::bounded::read_string(path, facekit_io::bounded::STATE)?;
    let table: toml::Table = text.parse().context("not a valid TOML file")?;
    let settings = settings_of(table)?;
    let mut args = Vec::new();
    for (id, value) in settings {
        let arg =
            train.get_arguments().find(|a| a.get_id() == id.as_str() && a.get_long().is_some()).with_context(|| {
                format!("unknown key `{id}` (see `facekit train -h` for the settings, by their flag's name)")
            })?;
        if matches!(id.as_str(), "config" | "print_config" | "nproc_per_node") {
            bail!("`{id}` belongs on the command line, not in a config file");
        }
        let overridden = given.contains(&id)
            || train.get_arg_conflicts_with(arg).iter().any(|c| given.iter().any(|g| c.get_id() == g.as_str()));
        if overridden {
            continue;
        }
        let flag = format!("--{}", arg.get_long().unwrap_or_default());
        push_value(&mut args, &flag, arg, &value).with_context(|| format!("key `{id}`"))?;
    }
    Ok(args)
}

/// `flag` with `value` as clap takes it: a switch for `true`, nothing for `false`, lists as the
/// flag takes them (comma-joined where it splits on commas, one word each otherwise).
fn push_value(args: &mut Vec<OsString>, flag: &str, arg: &clap::Arg, value: &Value) -> Result<()> {
    let switch = !arg.get_action().takes_values();
    match value {
        Value::Boolean(b) if switch => {
            if *b {
                args.push(flag.into());
            }
        }
        _ if switch => bail!("takes true or false, got {value}"),
        Value::Array(items) => {
            let words: Vec<String> = items.iter().map(word).collect::<Result<_>>()?;
            if words.is_empty() {
                return Ok(());
            }
            args.push(flag.into());
            if arg.get_value_delimiter().is_some() {
                args.push(words.join(",").into());
            } else {
                args.extend(words.into_iter().map(OsString::from));
            }
        }
        other => {
            args.push(flag.into());
            args.push(word(other)?.into());
        }
    }
    Ok(())
}

/// A scalar as one command-line word.
fn word(v: &Value) -> Result<String> {
    Ok(match v {
        Value::String(s) => s.clone(),
        Value::Integer(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Boolean(b) => b.to_string(),
        other => bail!("expected a string, a number or a boolean, got {other}"),
    })
}

/// `facekit train`'s clap command, to look flags up by id.
fn train_command() -> clap::Command {
    use clap::CommandFactory;
    super::Cli::command().find_subcommand("train").cloned().expect("the train subcommand")
}

/// The file's settings as (flag id, value): arcface_torch's keys first, translated, then
/// facekit's own, which override them.
fn settings_of(table: toml::Table) -> Result<Vec<(String, Value)>> {
    // `resume` is arcface_torch's boolean, or facekit's run name.
    let is_arcface = |k: &str, v: &Value| ARCFACE_KEYS.contains(&k) && !(k == "resume" && v.is_str());
    let (arcface, own): (toml::Table, toml::Table) = table.into_iter().partition(|(k, v)| is_arcface(k, v));
    let mut out = if arcface.is_empty() { Vec::new() } else { from_arcface_torch(arcface, &own)? };
    for (id, value) in flatten(own)? {
        out.retain(|(k, _)| *k != id);
        out.push((id, value));
    }
    Ok(out)
}

/// Keys only arcface_torch's configs have (its other keys, `lr`, `momentum`, `weight_decay`,
/// `batch_size`, `optimizer`, `embedding_size`, `seed`, are facekit's names too, with the same
/// meaning).
const ARCFACE_KEYS: [&str; 27] = [
    "network",
    "margin_list",
    "sample_rate",
    "interclass_filtering_threshold",
    "fp16",
    "verbose",
    "frequent",
    "dali",
    "dali_aug",
    "gradient_acc",
    "num_workers",
    "rec",
    "num_classes",
    "num_image",
    "num_epoch",
    "warmup_epoch",
    "val_targets",
    "resume",
    "save_all_states",
    "output",
    "wandb_key",
    "suffix_run_name",
    "using_wandb",
    "wandb_entity",
    "wandb_project",
    "wandb_log_all",
    "save_artifacts",
];

/// Keys arcface_torch and facekit share.
const SHARED_KEYS: [&str; 7] = ["lr", "momentum", "weight_decay", "batch_size", "optimizer", "embedding_size", "seed"];

/// arcface_torch's `configs/base.py` (commit 1bde35a): every config file is read over it.
fn base() -> toml::Table {
    toml::toml! {
        margin_list = [1.0, 0.5, 0.0]
        network = "r50"
        embedding_size = 512
        sample_rate = 1.0
        interclass_filtering_threshold = 0
        fp16 = false
        batch_size = 128
        optimizer = "sgd"
        lr = 0.1
        momentum = 0.9
        weight_decay = 5e-4
        verbose = 2000
        frequent = 10
        dali = false
        gradient_acc = 1
        seed = 2048
        num_workers = 2
    }
}

/// arcface_torch's settings as facekit's (flag id, value), over `base.py`'s; `own` are the
/// file's facekit keys (the shared ones, such as `lr`, count as arcface_torch's too).
fn from_arcface_torch(keys: toml::Table, own: &toml::Table) -> Result<Vec<(String, Value)>> {
    let mut c = base();
    for (k, v) in own.iter().filter(|(k, _)| SHARED_KEYS.contains(&k.as_str())) {
        c.insert(k.clone(), v.clone());
    }
    c.extend(keys);
    let s = |k: &str| c.get(k).and_then(Value::as_str).map(str::to_string);
    let f = |k: &str| c.get(k).and_then(|v| v.as_float().or(v.as_integer().map(|i| i as f64)));
    let b = |k: &str| c.get(k).and_then(Value::as_bool).unwrap_or(false);
    let mut out: Vec<(String, Value)> = Vec::new();
    let mut set = |id: &str, v: Value| out.push((id.to_string(), v));
    // What train_v2.py fixes whatever the config says.
    set("image_size", Value::Integer(112));
    set("schedule", Value::String("poly".into()));
    set("clip_grad_norm", Value::Float(5.0));
    set("arcface_scale", Value::Float(64.0));
    set("arch", Value::String(s("network").context("`network` must be a string such as \"r50\"")?));
    let margin = c.get("margin_list").and_then(Value::as_array).context("`margin_list` must be (m1, m2, m3)")?;
    let m: Vec<f64> = margin.iter().filter_map(|v| v.as_float().or(v.as_integer().map(|i| i as f64))).collect();
    let [m1, m2, m3] = m[..] else { bail!("`margin_list` must be three numbers (m1, m2, m3), got {margin:?}") };
    // arcface_torch's CombinedMarginLoss takes m1 = 1, m3 = 0 as ArcFace and m3 > 0 as CosFace
    // (it then ignores m1 and m2; docs/TRAINING.md, "Margins").
    if m1 == 1.0 && m3 == 0.0 {
        set("margin", Value::String("arcface".into()));
        set("arcface_margin", Value::Float(m2));
    } else if m3 > 0.0 {
        set("margin", Value::String("cosface".into()));
        set("margin_values", Value::Array(vec![1.0.into(), 0.0.into(), m3.into()]));
    } else {
        bail!(
            "`margin_list = [{m1}, {m2}, {m3}]`: arcface_torch trains m1 = 1, m3 = 0 (ArcFace) or m3 > 0 (CosFace) and \
             refuses the rest; for the combined margin write margin = \"combined\" and margin_values = [M1, M2, M3]"
        );
    }
    set("embedding_size", c["embedding_size"].clone());
    // arcface_torch always shards the head over the ranks; its sample_rate is Partial FC's.
    set("partial_fc", Value::Float(f("sample_rate").context("`sample_rate` must be a number")?));
    if f("interclass_filtering_threshold") != Some(0.0) {
        bail!("`interclass_filtering_threshold` other than 0 is not supported (facekit does no inter-class filtering)");
    }
    set("precision", Value::String(if b("fp16") { "fp16" } else { "fp32" }.into()));
    set("batch_size", c["batch_size"].clone());
    let optimizer = s("optimizer").context("`optimizer` must be \"sgd\" or \"adamw\"")?;
    set("optimizer", Value::String(optimizer.clone()));
    set("lr", c["lr"].clone());
    // train_v2.py gives AdamW no momentum: the key is SGD's alone.
    if optimizer == "sgd" {
        set("momentum", c["momentum"].clone());
    }
    set("weight_decay", c["weight_decay"].clone());
    set("eval_every", c["verbose"].clone());
    set("log_every", c["frequent"].clone());
    set("accumulate", c["gradient_acc"].clone());
    set("seed", c["seed"].clone());
    set("workers", c["num_workers"].clone());
    if let Some(e) = c.get("num_epoch") {
        set("epochs", e.clone());
    }
    if let Some(w) = c.get("warmup_epoch").filter(|w| w.as_integer() != Some(0)) {
        set("warmup_epochs", w.clone());
    }
    // The `.rec` folder: facekit trains on its imported copy, named after it, and reads the
    // verification sets arcface_torch reads from it.
    if let Some(rec) = s("rec") {
        let rec = PathBuf::from(rec);
        let name = rec.file_name().context("`rec` must name a folder")?.to_string_lossy().into_owned();
        set("train_sets", Value::Array(vec![Value::String(name)]));
        let targets = c.get("val_targets").and_then(Value::as_array).cloned().unwrap_or_default();
        let bins: Vec<Value> = targets
            .iter()
            .map(|t| t.as_str().map(|t| Value::String(rec.join(format!("{t}.bin")).display().to_string())))
            .collect::<Option<_>>()
            .context("`val_targets` must be a list of names such as \"lfw\"")?;
        set("eval_bin", Value::Array(bins));
    } else if c.get("val_targets").and_then(Value::as_array).is_some_and(|t| !t.is_empty()) {
        bail!("`val_targets` names .bin files in the `rec` folder, and no `rec` is given");
    }
    match c.get("resume") {
        None | Some(Value::Boolean(false)) => {}
        Some(Value::Boolean(true)) => {
            bail!("arcface_torch's `resume = true` continues the run in `output`: use --resume RUN on the command line")
        }
        Some(other) => bail!("`resume` is arcface_torch's true or false here, got {other}: use --resume RUN"),
    }
    if let Some(output) = s("output") {
        let output = PathBuf::from(output);
        let name = output.file_name().context("`output` must name a folder")?.to_string_lossy().into_owned();
        set("run_name", Value::String(name));
        if let Some(parent) = output.parent().filter(|p| !p.as_os_str().is_empty()) {
            set("model_dir", Value::String(parent.display().to_string()));
        }
    }
    if b("using_wandb") {
        bail!("`using_wandb = true`: facekit has no Weights & Biases logger (it writes train_log.jsonl, losses.tsv and curves.png)");
    }
    if b("dali") || b("dali_aug") {
        bail!("`dali = true`: facekit has no DALI loader; its own decode threads read the shards (set dali = false)");
    }
    // Read for what they say about the data, which the dataset's manifest says itself:
    // num_classes, num_image; and what facekit always does: save_all_states; and the W&B
    // settings, unused while using_wandb is false.
    Ok(out)
}

/// facekit's own keys as (flag id, value): flat keys as they are, the configuration tree's
/// sections (`[optimizer]`, `[schedule]`, `[warmup]`, `[head]`) through the flags their values
/// have (`trainer::config::settings`).
fn flatten(own: toml::Table) -> Result<Vec<(String, Value)>> {
    let mut out: Vec<(String, Value)> = Vec::new();
    let margin_kind = own
        .get("head")
        .and_then(|h| h.get("margin"))
        .and_then(|m| m.get("kind"))
        .and_then(Value::as_str)
        .unwrap_or("arcface")
        .to_string();
    for (key, value) in own {
        match value {
            Value::Table(section) => {
                let mut leaves = Vec::new();
                walk(&key, Value::Table(section), &mut leaves);
                for (path, leaf) in leaves {
                    let id = facekit_train::trainer::config::settings::flag_id(&path, &margin_kind);
                    if id == path {
                        bail!("unknown key `{path}` (the sections are those of `facekit train --print-config`)");
                    }
                    // Values one flag joins (--multi-weights' fr, gender, age; the margin's
                    // m1, m2, m3) are collected into its list, in the flag's order.
                    match out.iter_mut().find(|(k, _)| *k == id) {
                        Some((_, Value::Array(items))) => items.push(leaf),
                        Some((_, first)) if JOINED.contains(&id.as_str()) => {
                            *first = Value::Array(vec![first.clone(), leaf])
                        }
                        _ => out.push((id, leaf)),
                    }
                }
            }
            v => out.push((key, v)),
        }
    }
    // The tree holds CosFace's one value, the flag takes the combined margin's three.
    if margin_kind == "cosface" {
        if let Some((_, v)) = out.iter_mut().find(|(k, _)| k == "margin_values").filter(|(_, v)| !v.is_array()) {
            *v = Value::Array(vec![1.0.into(), 0.0.into(), v.clone()]);
        }
    }
    Ok(out)
}

/// The resolved configuration as a config file of facekit's keys (`--print-config`), which
/// `--config` reads back to the same configuration: every setting by its flag's name, in the
/// flag's form (the margin's values as `--margin-values` takes them).
pub fn print(cfg: &facekit_train::TrainConfig) -> Result<String> {
    use facekit_train::trainer::config::settings::flag_id;
    let json = serde_json::to_value(cfg)?;
    let mut leaves = Vec::new();
    json_leaves("", &json, &mut leaves);
    let margin_kind = cfg.head.margin.kind().name();
    let mut table = toml::Table::new();
    for (path, value) in leaves {
        let id = flag_id(&path, margin_kind);
        // Not settings of a file: the task is the command's argument, the rest the launcher's
        // or this resume's own.
        if matches!(id.as_str(), "task" | "world_size" | "resume" | "overwrite" | "allow_changed_data") {
            continue;
        }
        let Some(value) = toml_of(&value) else { continue };
        match table.get_mut(&id) {
            Some(Value::Array(items)) => items.push(value),
            Some(first) => *first = Value::Array(vec![first.clone(), value]),
            None => {
                table.insert(id, value);
            }
        }
    }
    if !matches!(cfg.head.margin, facekit_train::loss::Margin::Arcface { .. }) {
        let (m1, m2, m3) = cfg.head.margin.values();
        table.insert("margin_values".into(), Value::Array(vec![m1.into(), m2.into(), m3.into()]));
    }
    Ok(format!(
        "# facekit train {} --config FILE: the resolved configuration, by flag (facekit train -h)\n{}",
        match cfg.task {
            facekit_train::model::Task::Fr => "FR",
            facekit_train::model::Task::Gender => "Gender",
            facekit_train::model::Task::Age => "Age",
            facekit_train::model::Task::Multi => "Multi",
        },
        toml::to_string(&table)?
    ))
}

/// The leaves of a JSON tree with their dotted paths, `--multi-weights`' values in its order.
fn json_leaves(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, serde_json::Value)>) {
    match v {
        serde_json::Value::Object(map) => {
            let mut children: Vec<(&String, &serde_json::Value)> = map.iter().collect();
            const ORDER: [&str; 3] = ["fr", "gender", "age"];
            children.sort_by_key(|(k, _)| ORDER.iter().position(|o| o == k));
            for (k, child) in children {
                let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                json_leaves(&path, child, out);
            }
        }
        other => out.push((prefix.to_string(), other.clone())),
    }
}

/// A JSON value as TOML (`None` for null, which TOML cannot write: an unset setting).
fn toml_of(v: &serde_json::Value) -> Option<Value> {
    Some(match v {
        serde_json::Value::Null => return None,
        serde_json::Value::Bool(b) => Value::Boolean(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Float(n.as_f64()?),
        },
        serde_json::Value::String(s) => Value::String(s.clone()),
        serde_json::Value::Array(a) => Value::Array(a.iter().filter_map(toml_of).collect()),
        serde_json::Value::Object(_) => return None,
    })
}

/// Flags whose one value gathers several of the tree's.
const JOINED: [&str; 2] = ["multi_weights", "margin_values"];

/// The leaves of a TOML table with their dotted paths, `kind` first in each table (it says what
/// the other keys mean) and `--multi-weights`' values in its order.
fn walk(prefix: &str, v: Value, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Table(t) => {
            let mut children: Vec<(String, Value)> = t.into_iter().collect();
            const ORDER: [&str; 7] = ["kind", "fr", "gender", "age", "m1", "m2", "m3"];
            children.sort_by_key(|(k, _)| ORDER.iter().position(|o| o == k).unwrap_or(ORDER.len()));
            for (k, child) in children {
                walk(&format!("{prefix}.{k}"), child, out);
            }
        }
        other => out.push((prefix.to_string(), other)),
    }
}
