//! `facekit train`'s TensorBoard event files, read back by TensorBoard's own reader (the
//! `tensorboard` package from PyPI, in `.venv-tb`, without TensorFlow): every scalar equals, as a
//! float32, the value `train_log.jsonl` holds for its step, and a resume whose logs went past its
//! checkpoint leaves no step twice.

use crate::train_eval_bin::write_bin;
use crate::train_loop::{ok, train};
use facekit_train::run::paths::{RunPaths, LAST};
use std::collections::BTreeMap;
use std::path::Path;

/// Reads the run's event folder twice: file by file with `EventFileLoader` (every event on disk,
/// to see duplicates and each file's first record) and merged with `EventAccumulator` (what
/// TensorBoard shows). Prints JSON.
const READER: &str = r#"
import json, os, sys
from tensorboard.backend.event_processing import event_accumulator, event_file_loader
folder = sys.argv[1]
files = []
for name in sorted(os.listdir(folder)):
    events = list(event_file_loader.LegacyEventFileLoader(os.path.join(folder, name)).Load())
    scalars = [[v.tag, e.step, v.simple_value] for e in events for v in e.summary.value]
    files.append({"name": name, "first": events[0].file_version if events else None, "scalars": scalars})
acc = event_accumulator.EventAccumulator(folder, size_guidance={event_accumulator.SCALARS: 0})
acc.Reload()
merged = {t: [[s.step, s.value] for s in acc.Scalars(t)] for t in acc.Tags()["scalars"]}
print(json.dumps({"files": files, "file_version": acc.file_version, "merged": merged}))
"#;

/// `train_log.jsonl`'s fields and the TensorBoard tags they must appear under, spelled here
/// independently of the trainer's mapping.
const STEP_TAGS: [(&str, &str); 10] = [
    ("loss", "train/loss"),
    ("fr_loss", "train/fr_loss"),
    ("gender_loss", "train/gender_loss"),
    ("age_loss", "train/age_loss"),
    ("lr", "train/lr"),
    ("grad_norm", "train/grad_norm"),
    ("loss_scale", "train/loss_scale"),
    ("skipped_steps", "train/skipped_steps"),
    ("images_per_second", "train/images_per_second"),
    ("data_wait_ms", "train/data_wait_ms"),
];

type Curves = BTreeMap<String, Vec<(u64, f32)>>;

/// What TensorBoard must show: every number of every `train_log.jsonl` record, as float32.
fn expected(run: &Path) -> Curves {
    let mut out = Curves::new();
    let mut put = |tag: String, step: u64, v: &serde_json::Value| {
        if let Some(v) = v.as_f64() {
            out.entry(tag).or_default().push((step, v as f32));
        }
    };
    for line in std::fs::read_to_string(RunPaths::new(run).log()).unwrap().lines() {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        let step = r["step"].as_u64().unwrap();
        for (field, tag) in STEP_TAGS {
            put(tag.into(), step, &r[field]);
        }
        for (k, v) in r["validation"].as_object().into_iter().flatten() {
            put(format!("validation/{k}"), step, v);
        }
        if let Some(set) = r["eval_bin"]["set"].as_str() {
            put(format!("eval_bin/{set}/accuracy"), step, &r["eval_bin"]["accuracy"]);
            put(format!("eval_bin/{set}/std"), step, &r["eval_bin"]["std"]);
        }
    }
    out
}

/// TensorBoard's reading of the run's event folder (see [`READER`]).
fn read_back(python: &Path, run: &Path) -> serde_json::Value {
    let out =
        std::process::Command::new(python).args(["-c", READER]).arg(RunPaths::new(run).tensorboard()).output().unwrap();
    assert!(out.status.success(), "tensorboard's reader failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn curve(points: &serde_json::Value) -> Vec<(u64, f32)> {
    let pair = |p: &serde_json::Value| (p[0].as_u64().unwrap(), p[1].as_f64().unwrap() as f32);
    points.as_array().unwrap().iter().map(pair).collect()
}

#[test]
fn tensorboard_reads_every_logged_scalar_equal_to_train_log_and_no_step_twice_after_a_resume() {
    let Some(python) = facekit_testkit::tensorboard_python() else { return };
    let bins = tempfile::tempdir().unwrap();
    let bin = write_bin(bins.path(), "pairs_a");
    let models = tempfile::tempdir().unwrap();
    let run = models.path().join("tb");
    // Three tasks, clipping (gradient norm) and fp16 (loss scale), validation and a .bin set.
    let mut args: Vec<&str> = vec![
        "Multi",
        "--train-sets",
        "lfw",
        "utk",
        "--valid-sets",
        "lfw.valid",
        "utk.valid",
        "--lr",
        "0.02",
        "--clip-grad-norm",
        "5",
        "--precision",
        "fp16",
        "--allow-cpu-fp16",
        "--log-every",
        "1",
        "--valid-every",
        "2",
        "--eval-every",
        "3",
        "--checkpoint-every",
        "0",
        "--run-name",
        "tb",
        "--eval-bin",
        bin.to_str().unwrap(),
        "--max-steps",
    ];
    ok(&train(models.path(), &[&args[..], &["4"]].concat()));
    // A crash after step 8 with the checkpoint of step 4: the resume redoes steps 5 to 8.
    let paths = RunPaths::new(&run);
    let step4 = models.path().join("last-at-4");
    copy_dir(&paths.checkpoint(LAST), &step4);
    args.splice(0..args.len() - 1, ["Multi", "--resume", "tb"]);
    ok(&train(models.path(), &[&args[..], &["8"]].concat()));
    std::fs::remove_dir_all(paths.checkpoint(LAST)).unwrap();
    copy_dir(&step4, &paths.checkpoint(LAST));
    ok(&train(models.path(), &[&args[..], &["8"]].concat()));

    let want = expected(&run);
    for tag in [
        "train/loss",
        "train/fr_loss",
        "train/gender_loss",
        "train/age_loss",
        "train/lr",
        "train/grad_norm",
        "train/loss_scale",
        "train/images_per_second",
        "validation/age_mae",
        "eval_bin/pairs_a/accuracy",
    ] {
        assert!(want.contains_key(tag), "train_log.jsonl gives no {tag}: {:?}", want.keys());
    }
    assert_eq!(want["train/loss"].iter().map(|p| p.0).collect::<Vec<_>>(), (1..=8).collect::<Vec<_>>());

    let tb = read_back(&python, &run);
    // What TensorBoard shows.
    assert_eq!(tb["file_version"].as_f64(), Some(2.0), "{tb}");
    let merged: Curves = tb["merged"].as_object().unwrap().iter().map(|(t, p)| (t.clone(), curve(p))).collect();
    assert_eq!(merged, want);
    // What is on disk: one file per start, each opening with the version, and no step twice.
    let files = tb["files"].as_array().unwrap();
    assert_eq!(files.len(), 3, "{tb}");
    let mut on_disk = Curves::new();
    for f in files {
        assert_eq!(f["first"], "brain.Event:2", "{f}");
        for s in f["scalars"].as_array().unwrap() {
            let (tag, step, value) = (s[0].as_str().unwrap(), s[1].as_u64().unwrap(), s[2].as_f64().unwrap());
            on_disk.entry(tag.into()).or_default().push((step, value as f32));
        }
    }
    assert_eq!(on_disk, want, "the event files hold each step once");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}
