//! `facekit train --config FILE`: the shipped presets resolve to arcface_torch's recipe as its
//! configs state it, flags override the file, `--print-config` writes a file that reads back to
//! the same configuration, wrong keys are errors naming the file, and a run from a file trains
//! with what it says.

use crate::train_loop::{ok, train};
use std::path::{Path, PathBuf};

/// The presets shipped in `configs/`.
fn presets() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

/// `facekit train TASK --config FILE ARGS --print-config`, its stdout read as TOML.
fn resolved(task: &str, file: &Path, args: &[&str]) -> toml::Table {
    let out =
        crate::facekit().args(["train", task, "--config"]).arg(file).args(args).arg("--print-config").output().unwrap();
    assert!(out.status.success(), "{}: {}", file.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().parse().unwrap()
}

fn float(t: &toml::Table, key: &str) -> f64 {
    let v = &t[key];
    v.as_float().or(v.as_integer().map(|i| i as f64)).unwrap_or_else(|| panic!("{key} = {v}"))
}

#[test]
fn the_presets_resolve_to_arcface_torchs_recipe_as_their_files_state_it() {
    assert_eq!(presets().len(), 4, "ms1mv3_r50, ms1mv3_r100, glint360k_r100, wf42m_pfc02_r100");
    for preset in presets() {
        let file: toml::Table = std::fs::read_to_string(&preset).unwrap().parse().unwrap();
        let got = resolved("FR", &preset, &[]);
        let name = preset.display();
        // The file's own values, key by key.
        let network = file["network"].as_str().unwrap();
        assert_eq!(got["arch"].as_str(), Some(format!("iresnet{}", &network[1..]).as_str()), "{name}");
        for (theirs, ours) in [("lr", "lr"), ("weight_decay", "weight_decay"), ("sample_rate", "partial_fc")] {
            assert_eq!(float(&got, ours), float(&file, theirs), "{name}: {theirs}");
        }
        for (theirs, ours) in [("num_epoch", "epochs"), ("batch_size", "batch_size"), ("verbose", "eval_every")] {
            assert_eq!(got[ours].as_integer(), file[theirs].as_integer(), "{name}: {theirs}");
        }
        assert_eq!(
            got.get("warmup_epochs").and_then(|v| v.as_integer()).unwrap_or(0),
            file["warmup_epoch"].as_integer().unwrap()
        );
        assert_eq!(got["precision"].as_str(), Some("fp16"), "{name}: fp16 = true");
        let margin: Vec<f64> = file["margin_list"].as_array().unwrap().iter().map(|v| v.as_float().unwrap()).collect();
        if margin[2] > 0.0 {
            assert_eq!(got["margin"].as_str(), Some("cosface"), "{name}");
            assert_eq!(got["margin_values"].as_array().unwrap()[2].as_float(), Some(margin[2]), "{name}");
        } else {
            assert_eq!(got["margin"].as_str(), Some("arcface"), "{name}");
            assert_eq!(float(&got, "arcface_margin"), margin[1], "{name}");
        }
        let rec = PathBuf::from(file["rec"].as_str().unwrap());
        assert_eq!(got["train_sets"].as_array().unwrap()[0].as_str(), rec.file_name().unwrap().to_str());
        let bins: Vec<&str> = got["eval_bin"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        let targets: Vec<String> = file["val_targets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| rec.join(format!("{}.bin", t.as_str().unwrap())).display().to_string())
            .collect();
        assert_eq!(bins, targets, "{name}: val_targets are read from the rec folder");
        // What train_v2.py fixes, and base.py's values the presets leave as they are.
        assert_eq!(got["image_size"].as_integer(), Some(112), "{name}");
        assert_eq!(got["schedule"].as_str(), Some("poly"), "{name}");
        assert_eq!(float(&got, "poly_power"), 1.0, "{name}");
        assert_eq!(float(&got, "clip_grad_norm"), 5.0, "{name}");
        assert_eq!(float(&got, "arcface_scale"), 64.0, "{name}");
        assert_eq!(got["optimizer"].as_str(), Some("sgd"), "{name}");
        assert_eq!(got["seed"].as_integer(), Some(2048), "{name}");
        assert_eq!(got["log_every"].as_integer(), Some(10), "{name}");
        assert_eq!(got["accumulate"].as_integer(), Some(1), "{name}");
    }
}

#[test]
fn flags_override_the_file_and_print_config_reads_back_to_the_same_configuration() {
    let dir = tempfile::tempdir().unwrap();
    for preset in presets() {
        let got = resolved("FR", &preset, &["--lr", "0.05", "--warmup-steps", "3", "--train-sets", "a", "b"]);
        assert_eq!(float(&got, "lr"), 0.05);
        // --warmup-steps replaces the file's warm-up in epochs (clap: the two conflict).
        assert_eq!(got["warmup_steps"].as_integer(), Some(3));
        assert!(got.get("warmup_epochs").is_none());
        assert_eq!(got["train_sets"].as_array().unwrap().len(), 2);
        let printed = dir.path().join("printed.toml");
        std::fs::write(&printed, toml::to_string(&resolved("FR", &preset, &[])).unwrap()).unwrap();
        assert_eq!(resolved("FR", &printed, &[]), resolved("FR", &preset, &[]), "{}", preset.display());
    }
    // facekit's own keys, as the configuration tree's sections (config.json's shape).
    let tree = dir.path().join("tree.toml");
    std::fs::write(
        &tree,
        "train_sets = [\"x\"]\n[optimizer]\nkind = \"adamw\"\nbetas = [0.9, 0.99]\neps = 1e-7\nweight_decay = 0.1\n\
         [head.margin]\nkind = \"cosface\"\nm = 0.35\n[head.task_weights]\nfr = 1.0\ngender = 0.5\nage = 0.25\n",
    )
    .unwrap();
    let got = resolved("Multi", &tree, &[]);
    assert_eq!(got["optimizer"].as_str(), Some("adamw"));
    assert_eq!(got["adam_betas"], toml::Value::Array(vec![0.9.into(), 0.99.into()]));
    assert!(got.get("momentum").is_none(), "AdamW has no momentum");
    assert_eq!(got["margin_values"], toml::Value::Array(vec![1.0.into(), 0.0.into(), 0.35.into()]));
    assert_eq!(got["multi_weights"], toml::Value::Array(vec![1.0.into(), 0.5.into(), 0.25.into()]));
}

#[test]
fn wrong_keys_and_settings_facekit_cannot_honour_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    for (text, words) in [
        ("lr = 0.1\nlr_typo = 2\n", "unknown key `lr_typo`"),
        ("[optimizer]\nkind = \"sgd\"\nmomentun = 0.9\n", "unknown key `optimizer.momentun`"),
        ("network = \"r50\"\ninterclass_filtering_threshold = 0.1\n", "interclass_filtering_threshold"),
        ("network = \"r50\"\nresume = true\n", "--resume RUN"),
        ("network = \"r50\"\ndali = true\n", "DALI"),
        ("network = \"r50\"\nusing_wandb = true\n", "Weights & Biases"),
        ("network = \"r50\"\nmargin_list = [1.2, 0.5, 0.0]\n", "margin_list"),
        ("network = \"r50\"\nval_targets = [\"lfw\"]\n", "no `rec`"),
        ("no_flip = 3\n", "takes true or false"),
        ("nproc_per_node = 2\n", "belongs on the command line"),
        ("lr = [\n", "not a valid TOML file"),
        ("lr = \"fast\"\n", "--lr"),
        ("optimizer = \"adamw\"\nmomentum = 0.5\n", "--momentum 0.5 is SGD's"),
    ] {
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, text).unwrap();
        let out = crate::facekit()
            .args(["train", "FR", "--train-sets", "x", "--print-config", "--config"])
            .arg(&file)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text:?}: {stderr}");
        assert!(stderr.contains(words), "{text:?}: stderr lacks {words:?}: {stderr}");
        if !words.starts_with("--") {
            assert!(stderr.contains(&file.display().to_string()), "{text:?}: the file is named: {stderr}");
        }
    }
}

#[test]
fn a_run_from_a_config_file_trains_with_what_it_says_and_records_it() {
    let models = tempfile::tempdir().unwrap();
    let file = models.path().join("mine.toml");
    // arcface_torch's keys (CosFace, Partial FC, one epoch, SGD over base.py), facekit's for the
    // tiny network and the test's data; the command line adds the small-test flags.
    std::fs::write(
        &file,
        "margin_list = [1.0, 0.0, 0.35]\nsample_rate = 0.5\nnum_epoch = 1\nlr = 0.02\nfrequent = 2\n\
         train_sets = [\"lfw\"]\nimage_size = 48\n",
    )
    .unwrap();
    let args = ["FR", "--config", file.to_str().unwrap(), "--max-steps", "3", "--run-name", "cfg"];
    ok(&train(models.path(), &args));
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(models.path().join("cfg/config.json")).unwrap()).unwrap();
    let c = &saved["config"];
    assert_eq!(c["head"]["margin"], serde_json::json!({"kind": "cosface", "m": 0.35}));
    assert_eq!(c["head"]["partial_fc"], 0.5);
    assert_eq!(c["optimizer"], serde_json::json!({"kind": "sgd", "momentum": 0.9, "weight_decay": 0.0005}));
    assert_eq!(c["schedule"], serde_json::json!({"kind": "poly", "power": 1.0}));
    assert_eq!((c["epochs"].as_u64(), c["max_steps"].as_u64()), (Some(1), Some(3)));
    assert_eq!((c["lr"].as_f64(), c["log_every"].as_u64(), c["image_size"].as_u64()), (Some(0.02), Some(2), Some(48)));
    // The command line given overrides: the test's --arch tiny beat the file's implied r50.
    assert_eq!(c["arch"], "tiny");
    assert!(saved["command_line"].as_array().unwrap().iter().any(|a| a == "--config"));
}
