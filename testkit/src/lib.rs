//! Where facekit's tests find what they need: the shared real photos (`../shared/data`), dlib's
//! model files, the project's Python with the reference tools, and the workspace root.

use std::path::PathBuf;

/// The workspace root (the folder holding the top-level `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("testkit lives in the workspace").to_path_buf()
}

/// The shared real-photo data (`../shared/data` beside the workspace, or `FACEKIT_SHARED_DATA`).
pub fn shared_data() -> PathBuf {
    if let Some(p) = std::env::var_os("FACEKIT_SHARED_DATA") {
        return PathBuf::from(p);
    }
    workspace_root().join("../shared/data")
}

/// The dlib model folder (`models/`, or `FACEKIT_MODELS`).
pub fn models_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("FACEKIT_MODELS") {
        return PathBuf::from(p);
    }
    workspace_root().join("models")
}

/// The project's Python (the venv made by scripts/setup.sh), with torch, Pillow, dlib-bin, numpy.
pub fn venv_python() -> PathBuf {
    workspace_root().join(".venv/bin/python")
}

/// MXNet's Python (`.venv-mxnet`, made by scripts/setup.sh), when it exists and imports
/// `mxnet.recordio`: the reference client of RecordIO import and export. `None` says why not
/// on stderr, so that a skipping test is never silent.
pub fn mxnet_python() -> Option<PathBuf> {
    let py = workspace_root().join(".venv-mxnet/bin/python");
    let ok = std::process::Command::new(&py).args(["-c", "import mxnet.recordio"]).output().is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIPPED: {} cannot import mxnet.recordio (scripts/setup.sh installs it)", py.display());
        return None;
    }
    Some(py)
}

/// onnxruntime's Python (`.venv-onnx`, made by scripts/setup.sh), when it exists and imports
/// `onnxruntime`: the reference client of `facekit export --format onnx`. `None` says why not on
/// stderr, so that a skipping test is never silent.
pub fn onnxruntime_python() -> Option<PathBuf> {
    let py = workspace_root().join(".venv-onnx/bin/python");
    let ok = std::process::Command::new(&py).args(["-c", "import onnxruntime"]).output().is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIPPED: {} cannot import onnxruntime (scripts/setup.sh installs it)", py.display());
        return None;
    }
    Some(py)
}

/// libtorch's random generator is global to the process: tests that draw weights or inputs while
/// another test reseeds it would see another draw than their seed promises. Such tests take turns
/// through this guard (one test binary per crate runs all of them in one process).
pub fn rng_turn() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock().unwrap_or_else(|p| p.into_inner())
}
