//! `facekit export --format onnx` end to end: a network trained on real faces, exported, run by
//! onnxruntime in its own venv (no torch), gives the embeddings `facekit embed` gives on real face
//! chips; a Python without torch and onnx is named in a clear error and changes nothing; a later
//! export of other formats leaves no file of the earlier one; the exporter's Python is killed at
//! its time limit, on a stop request and with facekit.

use crate::train_loop::{ok, train};
use facekit_train::infer::export::ONNX_FILE;
use facekit_train::run::paths::MODEL_FILE;
use std::path::{Path, PathBuf};

const SIDE: u32 = 48;

/// Ten aligned UTKFace chips resized to the network's side, as lossless PNGs in `dir` (so that
/// `embed --prep resize` reads exactly these pixels), and their pixels in file-name order.
fn chips(dir: &Path) -> Vec<f32> {
    std::fs::create_dir_all(dir).unwrap();
    let utk = facekit_testkit::shared_data().join("utkface2k");
    let mut photos: Vec<PathBuf> = std::fs::read_dir(&utk).unwrap().map(|e| e.unwrap().path()).collect();
    photos.sort();
    let mut pixels = Vec::new();
    for (i, p) in photos.iter().take(10).enumerate() {
        let img = image::open(p).unwrap().into_rgb8();
        let img = image::imageops::resize(&img, SIDE, SIDE, image::imageops::FilterType::Triangle);
        img.save(dir.join(format!("{i:02}.png"))).unwrap();
        pixels.extend(img.into_raw().into_iter().map(f32::from));
    }
    pixels
}

fn read_npy(path: &Path) -> (usize, usize, Vec<f32>) {
    let a = facekit_eval::npy::read_f32(path).unwrap();
    (a.rows, a.cols, a.data)
}

fn listing(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect();
    v.sort();
    v
}

const ORT_SCRIPT: &str = r#"
import json, sys
import numpy as np, onnxruntime as ort
onnx_path, px, size, first = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
pixels = np.load(px).reshape(-1, size, size, 3)
x = ((pixels / 255.0 - 0.5) / 0.5).astype(np.float32).transpose(0, 3, 1, 2)
s = ort.InferenceSession(onnx_path, providers=['CPUExecutionProvider'])
e = np.concatenate([s.run(['embedding'], {'input': x[:first]})[0], s.run(['embedding'], {'input': x[first:]})[0]])
np.save(sys.argv[5], (e / np.linalg.norm(e, axis=1, keepdims=True)).astype(np.float32))
print(json.dumps({'inputs': [[t.name, t.shape] for t in s.get_inputs()], 'outputs': [[t.name, t.shape] for t in s.get_outputs()],
                  'raw_absmax': float(np.abs(e).max())}))
"#;

#[test]
fn onnx_export_runs_in_onnxruntime_and_matches_facekit_embed() {
    let Some(ort) = facekit_testkit::onnxruntime_python() else { return };
    let t = tempfile::tempdir().unwrap();
    let cwd = t.path();
    let run = crate::train_loop::twenty_step_run();
    let exp = cwd.join("exp");

    // --python wins over $FACEKIT_PYTHON (here a Python that does not exist).
    let out = crate::facekit()
        .args(["export", "--checkpoint", "last", "--format", "safetensors,onnx", "--json", "--model"])
        .arg(run)
        .arg("-o")
        .arg(&exp)
        .arg("--python")
        .arg(facekit_testkit::venv_python())
        .env("FACEKIT_PYTHON", cwd.join("no-such-python"))
        .output()
        .unwrap();
    assert!(out.status.success(), "export failed: {}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["onnx"]["path"], exp.join("model.onnx").display().to_string());
    assert_eq!(report["onnx"]["opset"], 17);
    assert_eq!(report["onnx"]["input"]["dims"], serde_json::json!(["batch", 3, SIDE, SIDE]));
    assert_eq!(report["torchscript"], serde_json::Value::Null);
    let names: Vec<String> = listing(&exp).into_iter().map(|f| f.0).collect();
    assert_eq!(names, ["model.onnx", "model.safetensors", "net.json"]);

    // facekit's embeddings of the chips, from the export folder itself.
    let px = chips(&cwd.join("chips"));
    facekit_eval::npy::write_f32(&cwd.join("px.npy"), 10, (SIDE * SIDE * 3) as usize, &px).unwrap();
    let out = crate::facekit()
        .args(["embed", "--device", "cpu", "--images", "chips", "--prep", "resize", "-o", "emb", "--model"])
        .arg(&exp)
        .current_dir(cwd)
        .output()
        .unwrap();
    assert!(out.status.success(), "embed failed: {}", String::from_utf8_lossy(&out.stderr));
    let labels = std::fs::read_to_string(cwd.join("emb/labels.tsv")).unwrap();
    let order: Vec<String> = labels.lines().skip(1).map(|l| l.split('\t').nth(3).unwrap().to_string()).collect();
    let sorted: Vec<String> = (0..10).map(|i| format!("{i:02}.png")).collect();
    assert!(order.iter().zip(&sorted).all(|(a, b)| a.ends_with(b.as_str())) && order.len() == 10, "{order:?}");
    let (rows, dim, ours) = read_npy(&cwd.join("emb/embeddings.npy"));
    assert_eq!((rows, dim), (10, 512));

    // onnxruntime's, in batches of 4 and 6 (the module was traced with 2).
    let run_ort = std::process::Command::new(&ort)
        .args(["-c", ORT_SCRIPT])
        .arg(exp.join("model.onnx"))
        .arg(cwd.join("px.npy"))
        .args([SIDE.to_string(), "4".into()])
        .arg(cwd.join("theirs.npy"))
        .output()
        .unwrap();
    assert!(run_ort.status.success(), "onnxruntime failed: {}", String::from_utf8_lossy(&run_ort.stderr));
    let r: serde_json::Value = serde_json::from_slice(&run_ort.stdout).unwrap();
    assert_eq!(r["inputs"], serde_json::json!([["input", ["batch", 3, SIDE, SIDE]]]));
    assert_eq!(r["outputs"], serde_json::json!([["embedding", ["batch", 512]]]));
    assert!(r["raw_absmax"].as_f64().unwrap() > 1e-2, "embeddings are all ~0: {r}");
    let (rows, _, theirs) = read_npy(&cwd.join("theirs.npy"));
    assert_eq!(rows, 10);
    let diff = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    let spread = ours.iter().zip(ours[dim..].iter()).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    println!("onnxruntime vs facekit embed: max abs diff {diff:e} (embeddings of two faces differ by up to {spread})");
    assert!(spread > 1e-3, "two faces give the same embedding: the comparison would be vacuous");
    assert!(diff < 1e-4, "onnxruntime's embeddings differ from facekit embed's by {diff}");

    // A Python without torch and onnx, from $FACEKIT_PYTHON: named, with what to install; the
    // earlier export is left as it was, and a fresh folder gets no model.onnx.
    let before = listing(&exp);
    for dir in [&exp, &cwd.join("exp2")] {
        let out = crate::facekit()
            .args(["export", "--checkpoint", "last", "--format", "onnx", "--format", "torchscript", "--model"])
            .arg(run)
            .arg("-o")
            .arg(dir)
            .env("FACEKIT_PYTHON", &ort)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(err.contains(&ort.display().to_string()) && err.contains("cannot import torch"), "{err}");
        assert!(
            err.contains("pip install torch onnx") && err.contains(&dir.join("model.onnx").display().to_string()),
            "{err}"
        );
        assert!(!dir.join("model.onnx").exists() || dir == &exp);
    }
    assert!(before == listing(&exp), "a failed export changed the earlier export");
    assert!(!cwd.join("exp2").exists(), "a failed export left a folder");

    // A later export of other formats into the folder removes the earlier ones, which would
    // otherwise pass for this network beside its net.json.
    let out = crate::facekit()
        .args(["export", "--checkpoint", "last", "--format", "torchscript", "--json", "--model"])
        .arg(run)
        .arg("-o")
        .arg(&exp)
        .output()
        .unwrap();
    assert!(out.status.success(), "export failed: {}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let gone = [exp.join(MODEL_FILE), exp.join(ONNX_FILE)].map(|p| p.display().to_string());
    assert_eq!(report["removed"], serde_json::json!(gone));
    assert_eq!(report["onnx"], serde_json::Value::Null);
    let names: Vec<String> = listing(&exp).into_iter().map(|f| f.0).collect();
    assert_eq!(names, ["model.torchscript.pt", "net.json"]);

    let out = crate::facekit().args(["export", "--model", "x", "-o", "y", "--format", "tflite"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("safetensors") && err.contains("onnx"), "{err}");
}

/// A stand-in for the exporter's Python that hangs: it records its PID and that of a helper it
/// starts, then waits for that helper forever.
const HANGING_PYTHON: &str = "#!/bin/sh\necho $$ > \"$0.pid\"\nsleep 1000 &\necho $! > \"$0.helper.pid\"\nwait\n";

/// True once process `pid` has ended (gone, or a zombie nobody reaped yet), waiting up to 10 s.
fn ends(pid: &str) -> bool {
    let t0 = std::time::Instant::now();
    while t0.elapsed() < std::time::Duration::from_secs(10) {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return true,
            Ok(stat) if stat.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('Z')) => return true,
            Ok(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    }
    false
}

/// Waits for the hanging Python to have started its helper; returns both PIDs.
fn python_started(script: &Path) -> (String, String) {
    let helper = PathBuf::from(format!("{}.helper.pid", script.display()));
    let t0 = std::time::Instant::now();
    while !helper.is_file() || std::fs::read_to_string(&helper).unwrap().trim().is_empty() {
        assert!(t0.elapsed() < std::time::Duration::from_secs(120), "the exporter's Python never started");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let read = |p: PathBuf| std::fs::read_to_string(p).unwrap().trim().to_string();
    let pids = (read(PathBuf::from(format!("{}.pid", script.display()))), read(helper.clone()));
    std::fs::remove_file(helper).unwrap();
    pids
}

#[test]
fn the_onnx_exporter_is_killed_at_its_time_limit_on_a_stop_and_with_facekit() {
    let t = tempfile::tempdir().unwrap();
    let models = t.path().join("Model");
    ok(&train(
        &models,
        &["FR", "--train-sets", "lfw", "--max-steps", "1", "--run-name", "r", "--checkpoint-every", "0"],
    ));
    let python = t.path().join("python");
    std::fs::write(&python, HANGING_PYTHON).unwrap();
    std::fs::set_permissions(&python, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let exp = t.path().join("exp");
    let export = |extra: &[&str]| {
        let mut cmd = crate::facekit();
        cmd.args(["export", "--checkpoint", "last", "--format", "onnx", "--model"])
            .arg(models.join("r"))
            .arg("-o")
            .arg(&exp)
            .arg("--python")
            .arg(&python)
            .args(extra);
        cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        cmd
    };

    // Its time limit: the export fails saying so, and the Python and its helper are gone.
    let t0 = std::time::Instant::now();
    let out = export(&["--onnx-timeout", "2"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("within 2 s") && err.contains("--onnx-timeout"), "{err}");
    assert!(t0.elapsed() < std::time::Duration::from_secs(120));
    let (py, helper) = python_started(&python);
    assert!(ends(&py) && ends(&helper), "the timed-out exporter's processes are still running");
    assert!(!exp.exists(), "a failed export left a folder");

    // A stop request (SIGTERM): exit 143, the whole group killed, nothing written.
    let child = export(&[]).spawn().unwrap();
    let (py, helper) = python_started(&python);
    assert!(std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(ends(&py) && ends(&helper), "the stopped exporter's processes are still running");
    assert!(!exp.exists());

    // facekit killed outright (kill -9): the kernel ends the Python with it.
    let mut child = export(&[]).spawn().unwrap();
    let (py, helper) = python_started(&python);
    child.kill().unwrap();
    let _ = child.wait();
    assert!(ends(&py), "the exporter's Python outlived a killed facekit");
    // Its helper is no child of facekit's; end it here (the group kill covers the cases above).
    let _ = std::process::Command::new("kill").arg(&helper).status();
}
