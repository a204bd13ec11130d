//! `facekit train` with an IR-ResNet, resumed, and started from a run's weights with `--init`,
//! plus `--init`'s refusals, which leave no run folder behind.

use crate::train_loop::{data, ok, state};
use facekit_train::run::paths::{RunPaths, LAST};
use std::path::Path;
use std::process::Output;

/// `facekit train FR` on the small LFW set, on CPU, small batches, plus `args`.
fn train(model_dir: &Path, args: &[&str]) -> Output {
    crate::facekit()
        .args([
            "train",
            "FR",
            "--train-sets",
            "lfw",
            "--batch-size",
            "8",
            "--workers",
            "2",
            "--device",
            "cpu",
            "--lr",
            "0.01",
        ])
        .args(["--checkpoint-every", "0"])
        .args(args)
        .arg("--data-dir")
        .arg(data().join("training"))
        .arg("--model-dir")
        .arg(model_dir)
        .output()
        .unwrap()
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

fn names(v: &serde_json::Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn iresnet_trains_resumes_and_seeds_a_new_run_with_init() {
    let models = tempfile::tempdir().unwrap();
    let ir = ["--arch", "iresnet18", "--image-size", "32"];
    // `r18` is arcface_torch's name for it.
    ok(&train(models.path(), &["--arch", "r18", "--image-size", "32", "--max-steps", "2", "--run-name", "ir"]));
    let run = models.path().join("ir");
    assert_eq!(json(&RunPaths::new(&run).net())["arch"], "iresnet18");
    assert_eq!(state(&run, LAST)["step"], 2);
    ok(&train(models.path(), &["--resume", "ir", "--max-steps", "3"]));
    assert_eq!(state(&run, LAST)["step"], 3);

    // A new run from that run's folder: everything but the ArcFace centres loads.
    let source = run.to_str().unwrap();
    let out = train(models.path(), &[&ir[..], &["--max-steps", "2", "--run-name", "ft", "--init", source]].concat());
    ok(&out);
    let report = json(&models.path().join("ft/init.json"));
    assert!(report["file"].as_str().unwrap().ends_with("checkpoints/last/model.safetensors"), "{report}");
    let loaded = names(&report["loaded"]);
    assert_eq!(names(&report["ignored"]), ["arcface.weight"]);
    assert_eq!(names(&report["new"]), ["arcface.weight"]);
    for n in ["conv1.weight", "layer4.1.conv2.weight", "fc.weight", "features.weight", "features.running_var"] {
        assert!(loaded.iter().any(|l| l == n), "{n} not loaded: {loaded:?}");
    }
    let line = format!("loaded {} tensors, 1 new, 1 ignored", loaded.len());
    assert!(
        stderr(&out).contains("facekit train: --init") && stderr(&out).contains(&line),
        "no summary line: {}",
        stderr(&out)
    );
    assert_eq!(state(&models.path().join("ft"), LAST)["step"], 2);

    // --init with --resume is refused, and the run is left as it was.
    let out = train(models.path(), &["--resume", "ft", "--max-steps", "4", "--init", source]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--init only starts new runs"), "{}", stderr(&out));
    assert_eq!(state(&models.path().join("ft"), LAST)["step"], 2);
    // A run started with --init resumes as any other (its config.json keeps the --init path).
    let cfg = json(&models.path().join("ft/config.json"));
    assert_eq!(cfg["config"]["init"], source);
    ok(&train(models.path(), &["--resume", "ft", "--max-steps", "3"]));
    assert_eq!(state(&models.path().join("ft"), LAST)["step"], 3);

    // Weights of another network, and a file that is no safetensors: refused before any folder exists.
    let out = train(
        models.path(),
        &["--arch", "tiny", "--image-size", "32", "--max-steps", "1", "--run-name", "bad", "--init", source],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("in the file but the network's") && stderr(&out).contains("model.safetensors"),
        "{}",
        stderr(&out)
    );
    assert!(!models.path().join("bad").exists(), "a refused --init left a run folder");
    let junk = models.path().join("backbone.pth");
    std::fs::write(&junk, b"not safetensors").unwrap();
    let out = train(
        models.path(),
        &[&ir[..], &["--max-steps", "1", "--run-name", "bad", "--init", junk.to_str().unwrap()]].concat(),
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("backbone.pth") && stderr(&out).contains("safetensors"), "{}", stderr(&out));
    assert!(!models.path().join("bad").exists(), "a refused --init left a run folder");
}
