//! Face detection and 5-point landmarks through dlib, behind one facade: with feature `dlib`
//! the aligner is `enabled.rs`; without it `disabled.rs` provides the same type, whose
//! constructor says the build has no detector, so that callers need no `cfg` of their own.
//!
//! [`FaceAligner`] owns one detector and one landmark predictor: dlib's 5-point model for
//! [`Alignment::Dlib`](crate::align::Alignment), its 68-point model for `Arcface` (the five
//! ArcFace points are taken from the 68). It is `Send` but not `Sync`
//! (dlib's HOG scanner keeps scratch buffers inside the detector object): keep one aligner
//! per worker thread, e.g. in a rayon `map_init`.
//!
//! Detection policy, matching what a dlib Python user writes by hand:
//! - HOG: run at the photo's own resolution first; only when nothing is found, run again on
//!   the image upsampled 2x with dlib's `pyramid_up` (what `detector(img, 1)` does in Python)
//!   and map the boxes back with `pyramid_down<2>::rect_down`. Upsampling quadruples the cost,
//!   so we pay it only for photos with small faces.
//! - CNN (`mmod_human_face_detector.dat`): one pass, no upsampling (it already finds faces
//!   down to about 40 px, and it is the slow path).
//! - Several faces: the largest box wins; the count is reported in [`Aligned::faces`].
//! - Faces whose eye centres are closer than [`MIN_EYE_DISTANCE`] pixels are rejected
//!   ([`AlignError::TooSmall`]): such a chip would be a blurred upscale (more than about 6x at
//!   the default 224 px chip) that teaches the network nothing.

use image::RgbImage;
use std::path::{Path, PathBuf};

#[cfg(feature = "dlib")]
mod enabled;
#[cfg(feature = "dlib")]
pub use enabled::{FaceAligner, FaceEncoder};
#[cfg(not(feature = "dlib"))]
mod disabled;
#[cfg(not(feature = "dlib"))]
pub use disabled::{FaceAligner, FaceEncoder};

/// Whether this build can detect faces (feature `dlib`).
pub(crate) const AVAILABLE: bool = cfg!(feature = "dlib");

/// Largest photo (in pixels) that is upsampled 2x when no face is found at its own size: 8 Mpx.
#[cfg(feature = "dlib")]
pub(crate) const MAX_UPSAMPLE_PIXELS: u64 = 8_000_000;
/// File name of dlib's 5-point landmark model inside the models folder.
pub const LANDMARKS_MODEL: &str = "shape_predictor_5_face_landmarks.dat";
/// File name of dlib's 68-point (iBUG 300-W) landmark model inside the models folder.
pub const LANDMARKS68_MODEL: &str = "shape_predictor_68_face_landmarks.dat";
/// File name of dlib's CNN face detector inside the models folder.
#[cfg(feature = "dlib")]
pub(crate) const CNN_MODEL: &str = "mmod_human_face_detector.dat";
/// File name of dlib's face encoder (ResNet, 128-d descriptors; CC0) inside the models folder.
pub const ENCODER_MODEL: &str = "dlib_face_recognition_resnet_model_v1.dat";
/// Size of one [`FaceEncoder`] descriptor.
pub const ENCODING_DIM: usize = 128;
/// Smallest accepted distance between the eye centres, in source pixels.
#[cfg(feature = "dlib")]
pub(crate) const MIN_EYE_DISTANCE: f64 = 12.0;

/// Which dlib face detector to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum DetectorKind {
    /// HOG + linear SVM (`get_frontal_face_detector`): fast, frontal faces.
    Hog,
    /// CNN (MMOD): slower, finds rotated and partly occluded faces.
    Cnn,
}

impl DetectorKind {
    /// Name stored in manifests (`hog`, `cnn`).
    pub fn name(&self) -> &'static str {
        match self {
            DetectorKind::Hog => "hog",
            DetectorKind::Cnn => "cnn",
        }
    }
}

/// Why a photo gave no chip.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AlignError {
    /// The detector found no face (HOG: not even after upsampling).
    #[error("no face found")]
    NoFace,
    /// The largest face is too small to be useful.
    #[error("face too small: eye distance {eye_distance:.1} px < {min:.1} px")]
    TooSmall {
        /// Measured distance between the eye centres.
        eye_distance: f64,
        /// The threshold.
        min: f64,
    },
}

impl AlignError {
    /// Stable short code for reports: `no_face` or `too_small`.
    pub fn reason(&self) -> &'static str {
        self.reject_reason().code()
    }

    /// Why a pack rejects a photo that gives this error.
    pub(crate) fn reject_reason(&self) -> crate::reason::RejectReason {
        match self {
            AlignError::NoFace => crate::reason::RejectReason::NoFace,
            AlignError::TooSmall { .. } => crate::reason::RejectReason::TooSmall,
        }
    }
}

/// A face box in image pixels, inclusive corners (dlib's `rectangle`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaceBox {
    /// Left column.
    pub left: i64,
    /// Top row.
    pub top: i64,
    /// Right column (inclusive).
    pub right: i64,
    /// Bottom row (inclusive).
    pub bottom: i64,
}

impl FaceBox {
    /// Area in pixels (inclusive corners).
    pub fn area(&self) -> i64 {
        (self.right - self.left + 1).max(0) * (self.bottom - self.top + 1).max(0)
    }
}

/// Faces found in one photo.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    /// All boxes, in original image pixels.
    pub faces: Vec<FaceBox>,
    /// Whether they were found on the 2x-upsampled image.
    pub upsampled: bool,
}

impl Detection {
    /// The largest box, if any.
    pub fn largest(&self) -> Option<FaceBox> {
        // max_by_key keeps the LAST maximum; iterate reversed so ties go to dlib's first box.
        self.faces.iter().rev().copied().max_by_key(|f| f.area())
    }
}

/// One aligned face.
#[derive(Debug, Clone)]
pub struct Aligned {
    /// The face chip.
    pub chip: RgbImage,
    /// How many faces the detector found (the largest was used).
    pub faces: usize,
    /// Whether the face was only found after 2x upsampling.
    pub upsampled: bool,
    /// The five landmarks of the chosen face in source pixels, in the order of the alignment's
    /// template: dlib's 5 points ([`crate::align::LandmarkOrder::Dlib5`]) or the ArcFace points
    /// ([`crate::align::LandmarkOrder::InsightFace`]).
    pub landmarks: [[f64; 2]; 5],
    /// The chosen face box.
    pub face: FaceBox,
}

/// The models folder: `dir` if given, else `./models`. (The command line's `--models` defaults
/// to `$FACEKIT_MODELS`; the library reads no environment.)
pub fn models_dir(dir: Option<&Path>) -> PathBuf {
    dir.map_or_else(|| PathBuf::from("models"), Path::to_path_buf)
}
