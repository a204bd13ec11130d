//! The facade without dlib: [`FaceAligner`] exists with the same methods but cannot be made,
//! so every caller compiles unchanged and a detection request fails with one clear message.

use super::{AlignError, Aligned, Detection, DetectorKind, FaceBox};
use crate::align::{Alignment, ChipSpec};
use image::RgbImage;
use std::path::Path;

/// Detector + landmark predictor: not in this build (feature `dlib`).
pub struct FaceAligner {
    never: std::convert::Infallible,
}

impl FaceAligner {
    /// Always an error: this build has no face detector.
    pub fn new(_models: Option<&Path>, _kind: DetectorKind, _spec: ChipSpec) -> anyhow::Result<FaceAligner> {
        anyhow::bail!("this facekit was built without face detection (feature `dlib`): give --landmarks")
    }

    /// Always an error: this build has no face detector.
    pub fn open(
        _models: Option<&Path>,
        _kind: DetectorKind,
        _spec: ChipSpec,
        _alignment: Alignment,
    ) -> anyhow::Result<FaceAligner> {
        anyhow::bail!("this facekit was built without face detection (feature `dlib`): give --landmarks")
    }

    /// Unreachable: no aligner exists.
    pub fn alignment(&self) -> Alignment {
        match self.never {}
    }

    /// Unreachable: no aligner exists.
    pub fn all_landmarks(&self, _img: &RgbImage, _face: FaceBox) -> Vec<[f64; 2]> {
        match self.never {}
    }

    /// Unreachable: no aligner exists.
    pub fn with_min_eye_distance(self, _px: f64) -> Self {
        match self.never {}
    }

    /// Unreachable: no aligner exists.
    pub fn kind(&self) -> DetectorKind {
        match self.never {}
    }

    /// Unreachable: no aligner exists.
    pub fn spec(&self) -> ChipSpec {
        match self.never {}
    }

    /// Unreachable: no aligner exists.
    pub fn detect(&self, _img: &RgbImage) -> Detection {
        match self.never {}
    }

    /// Unreachable: no aligner exists.
    pub fn landmarks(&self, _img: &RgbImage, _face: FaceBox) -> [[f64; 2]; 5] {
        match self.never {}
    }

    /// Unreachable: no aligner exists.
    pub fn align(&self, _img: &RgbImage) -> Result<Aligned, AlignError> {
        match self.never {}
    }
}

/// dlib's face encoder: not in this build (feature `dlib`).
pub struct FaceEncoder {
    never: std::convert::Infallible,
}

impl FaceEncoder {
    /// Always an error: this build has no dlib.
    pub fn new(_models: Option<&Path>) -> anyhow::Result<FaceEncoder> {
        anyhow::bail!("this facekit was built without dlib (feature `dlib`): give --model")
    }

    /// Unreachable: no encoder exists.
    pub fn encode(&self, _chip: &RgbImage) -> anyhow::Result<(Vec<f32>, bool)> {
        match self.never {}
    }
}
