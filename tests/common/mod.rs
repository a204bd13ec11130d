//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// The shared real-photo data (`../shared/data`, or `FACEKIT_SHARED_DATA`).
pub fn shared_data() -> PathBuf {
    if let Some(p) = std::env::var_os("FACEKIT_SHARED_DATA") {
        return PathBuf::from(p);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data")
}

/// The dlib model folder (`models/`, or `FACEKIT_MODELS`).
pub fn models_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("FACEKIT_MODELS") {
        return PathBuf::from(p);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models")
}

/// The project's Python (the venv made by scripts/setup.sh).
pub fn venv_python() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python")
}

/// The facekit binary built for these tests.
pub fn facekit() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_facekit"))
}
