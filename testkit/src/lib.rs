//! Where facekit's tests find what they need: the shared real photos (`../shared/data`), dlib's
//! model files, the project's Python with the reference tools, and the workspace root; what tests
//! read back from a training run ([`runs`]); with feature `sets`, the small training sets the
//! training tests write from those photos ([`sets`]).

pub mod runs;
#[cfg(feature = "sets")]
pub mod sets;

use std::io::Write;
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

/// The environment variable under which a missing reference tool fails its test instead of
/// skipping it. `scripts/test.sh` (and so CI) sets it: a machine where MXNet failed to install
/// must not go green without checking MXNet.
pub const REQUIRE_REFERENCES: &str = "FACEKIT_REQUIRE_REFERENCES";

/// Whether tests must fail rather than skip when a reference tool is missing.
pub fn references_required() -> bool {
    std::env::var_os(REQUIRE_REFERENCES).is_some_and(|v| !v.is_empty() && v != "0")
}

/// `Some(python)` when `python` imports `module`. Otherwise the test skips, saying why on stderr
/// (`None`), or, under [`REQUIRE_REFERENCES`], fails with the same reason.
///
/// The skip is written to the process's stderr itself, not through a printing macro: the test harness
/// captures what the printing macros write and shows it only for a failed test, and a skipped test
/// passes, so a plain `cargo test` would hide that a check did not run.
pub fn reference_python(python: PathBuf, module: &str) -> Option<PathBuf> {
    let ok = std::process::Command::new(&python)
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(python);
    }
    let why = format!("{} cannot import {module} (scripts/setup.sh installs it)", python.display());
    if references_required() {
        panic!("{why}, and {REQUIRE_REFERENCES} is set: a test whose reference tool is missing fails");
    }
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED: {why}");
    None
}

/// MXNet's Python (`.venv-mxnet`, made by scripts/setup.sh), when it imports `mxnet.recordio`:
/// the reference client of RecordIO import and export (see [`reference_python`]).
pub fn mxnet_python() -> Option<PathBuf> {
    reference_python(workspace_root().join(".venv-mxnet/bin/python"), "mxnet.recordio")
}

/// onnxruntime's Python (`.venv-onnx`, made by scripts/setup.sh), when it imports `onnxruntime`:
/// the reference client of `facekit export --format onnx` (see [`reference_python`]).
pub fn onnxruntime_python() -> Option<PathBuf> {
    reference_python(workspace_root().join(".venv-onnx/bin/python"), "onnxruntime")
}

/// TensorBoard's Python (`.venv-tb`, made by scripts/setup.sh), when it imports its event reader:
/// the reference reader of the event files `facekit train` writes (see [`reference_python`]).
pub fn tensorboard_python() -> Option<PathBuf> {
    reference_python(
        workspace_root().join(".venv-tb/bin/python"),
        "tensorboard.backend.event_processing.event_accumulator",
    )
}

/// OpenCV's and scikit-image's Python (`.venv-cv`, made by scripts/setup.sh), when it imports both:
/// the reference of `--align arcface` (insightface's `norm_crop` recipe; see [`reference_python`]).
pub fn opencv_python() -> Option<PathBuf> {
    reference_python(workspace_root().join(".venv-cv/bin/python"), "cv2, skimage")
}

/// facenet-pytorch's Python (`.venv-mtcnn`, made by scripts/setup.sh), when it imports its MTCNN:
/// a second face detector whose five landmarks check the ones facekit takes from dlib's 68 points.
pub fn mtcnn_python() -> Option<PathBuf> {
    reference_python(workspace_root().join(".venv-mtcnn/bin/python"), "facenet_pytorch")
}

/// libtorch's random generator is global to the process: tests that draw weights or inputs while
/// another test reseeds it would see another draw than their seed promises. Such tests take turns
/// through this guard (one test binary per crate runs all of them in one process).
pub fn rng_turn() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock().unwrap_or_else(|p| p.into_inner())
}
