//! Face detection and 5-point landmarks through dlib (feature `pack`).
//!
//! [`FaceAligner`] owns one detector and one landmark predictor. It is `Send` but not `Sync`
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

use std::path::{Path, PathBuf};

/// Largest photo (in pixels) that is upsampled 2x when no face is found at its own size: 8 Mpx.
pub const MAX_UPSAMPLE_PIXELS: u64 = 8_000_000;

use anyhow::Context;
use dlib_face_recognition::{
    FaceDetector, FaceDetectorCnn, FaceDetectorTrait, ImageMatrix, LandmarkPredictor, LandmarkPredictorTrait, Rectangle,
};
use image::RgbImage;

use super::{align_dlib5, ChipSpec, LandmarkOrder, Landmarks5};

/// File name of dlib's 5-point landmark model inside the models folder.
pub const LANDMARKS_MODEL: &str = "shape_predictor_5_face_landmarks.dat";
/// File name of dlib's CNN face detector inside the models folder.
pub const CNN_MODEL: &str = "mmod_human_face_detector.dat";
/// Smallest accepted distance between the eye centres, in source pixels.
pub const MIN_EYE_DISTANCE: f64 = 12.0;

/// Which dlib face detector to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
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
        match self {
            AlignError::NoFace => "no_face",
            AlignError::TooSmall { .. } => "too_small",
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
    fn from_dlib(r: &Rectangle) -> FaceBox {
        FaceBox { left: r.left as i64, top: r.top as i64, right: r.right as i64, bottom: r.bottom as i64 }
    }
    fn to_dlib(self) -> Rectangle {
        Rectangle { left: self.left as _, top: self.top as _, right: self.right as _, bottom: self.bottom as _ }
    }
    /// Maps a box found on a `pyramid_up` image back to the original (dlib's
    /// `pyramid_down<2>::rect_down`, then rounding each edge with `floor(x + 0.5)`).
    fn pyramid_down(self) -> FaceBox {
        let f = |v: i64, off: f64| (v as f64 / 2.0 - off + 0.5).floor() as i64;
        FaceBox { left: f(self.left, 1.25), top: f(self.top, 0.75), right: f(self.right, 1.25), bottom: f(self.bottom, 0.75) }
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
    /// The dlib 5-point landmarks of the chosen face, in source pixels ([`LandmarkOrder::Dlib5`]).
    pub landmarks: [[f64; 2]; 5],
    /// The chosen face box.
    pub face: FaceBox,
}

enum Detector {
    Hog(FaceDetector),
    Cnn(FaceDetectorCnn),
}

/// Detector + landmark predictor + chip geometry. `Send`, not `Sync`: one per thread.
pub struct FaceAligner {
    detector: Detector,
    predictor: LandmarkPredictor,
    kind: DetectorKind,
    spec: ChipSpec,
    min_eye_distance: f64,
}

/// The models folder: `dir` if given, else `$FACEKIT_MODELS`, else `./models`.
pub fn models_dir(dir: Option<&Path>) -> PathBuf {
    match dir {
        Some(d) => d.to_path_buf(),
        None => std::env::var_os("FACEKIT_MODELS").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("models")),
    }
}

fn model_file(dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let p = dir.join(name);
    anyhow::ensure!(
        p.is_file(),
        "dlib model {} not found (models folder {}; run scripts/setup.sh or set FACEKIT_MODELS)",
        p.display(),
        dir.display()
    );
    Ok(p)
}

impl FaceAligner {
    /// Loads the models from `models` (see [`models_dir`]) for the given detector and chip.
    pub fn new(models: Option<&Path>, kind: DetectorKind, spec: ChipSpec) -> anyhow::Result<FaceAligner> {
        spec.validate()?;
        check_cpu()?;
        let dir = models_dir(models);
        let lm = model_file(&dir, LANDMARKS_MODEL)?;
        let predictor = LandmarkPredictor::open(&lm)
            .map_err(|e| anyhow::anyhow!(e))
            .with_context(|| format!("loading landmark model {}", lm.display()))?;
        let detector = match kind {
            DetectorKind::Hog => Detector::Hog(FaceDetector::new()),
            DetectorKind::Cnn => {
                let p = model_file(&dir, CNN_MODEL)?;
                Detector::Cnn(
                    FaceDetectorCnn::open(&p)
                        .map_err(|e| anyhow::anyhow!(e))
                        .with_context(|| format!("loading CNN face detector {}", p.display()))?,
                )
            }
        };
        Ok(FaceAligner { detector, predictor, kind, spec, min_eye_distance: MIN_EYE_DISTANCE })
    }

    /// Changes the too-small threshold (eye-centre distance in source pixels).
    pub fn with_min_eye_distance(mut self, px: f64) -> Self {
        self.min_eye_distance = px;
        self
    }

    /// The detector in use.
    pub fn kind(&self) -> DetectorKind {
        self.kind
    }

    /// The chip geometry in use.
    pub fn spec(&self) -> ChipSpec {
        self.spec
    }

    fn run_detector(&self, m: &ImageMatrix) -> Vec<FaceBox> {
        let rects = match &self.detector {
            Detector::Hog(d) => d.face_locations(m),
            Detector::Cnn(d) => d.face_locations(m),
        };
        rects.iter().map(FaceBox::from_dlib).collect()
    }

    /// Finds faces (HOG: upsampling 2x only when none is found at 1x, in photos of at most
    /// [`MAX_UPSAMPLE_PIXELS`]).
    pub fn detect(&self, img: &RgbImage) -> Detection {
        let m = to_matrix(img);
        self.detect_matrix(&m, img.width(), img.height())
    }

    fn detect_matrix(&self, m: &ImageMatrix, w: u32, h: u32) -> Detection {
        let faces = self.run_detector(m);
        // Upsampling exists for small faces in small photos; on a large photo it would only
        // quadruple the memory of a worker (a 100 Mpx photo: 1.2 GB more) for faces that are
        // large enough already.
        let too_large = u64::from(w) * u64::from(h) > MAX_UPSAMPLE_PIXELS;
        if !faces.is_empty() || self.kind == DetectorKind::Cnn || w == 0 || h == 0 || too_large {
            return Detection { faces, upsampled: false };
        }
        // pyramid_up's output is rect_up(get_rect(img)) + 1: (2w + 2) x (2h + 1) for
        // pyramid_down<2>'s point_up = (p + (1.25, 0.75)) * 2, filled by resize_image (bilinear).
        let up = m.resize(2 * w as usize + 2, 2 * h as usize + 1);
        let faces = self.run_detector(&up).into_iter().map(FaceBox::pyramid_down).collect();
        Detection { faces, upsampled: true }
    }

    /// The 5 dlib landmarks of `face` (dlib order, source pixels).
    pub fn landmarks(&self, img: &RgbImage, face: FaceBox) -> [[f64; 2]; 5] {
        landmarks_on(&self.predictor, &to_matrix(img), face)
    }

    /// Detects the largest face, predicts its landmarks and cuts the chip.
    pub fn align(&self, img: &RgbImage) -> Result<Aligned, AlignError> {
        let m = to_matrix(img);
        let det = self.detect_matrix(&m, img.width(), img.height());
        let face = det.largest().ok_or(AlignError::NoFace)?;
        let landmarks = landmarks_on(&self.predictor, &m, face);
        let eye_distance = Landmarks5 { points: landmarks, order: LandmarkOrder::Dlib5 }.eye_distance();
        if eye_distance < self.min_eye_distance {
            return Err(AlignError::TooSmall { eye_distance, min: self.min_eye_distance });
        }
        let chip = align_dlib5(img, &landmarks, &self.spec);
        Ok(Aligned { chip, faces: det.faces.len(), upsampled: det.upsampled, landmarks, face })
    }
}

fn landmarks_on(p: &LandmarkPredictor, m: &ImageMatrix, face: FaceBox) -> [[f64; 2]; 5] {
    let parts = p.face_landmarks(m, &face.to_dlib());
    let mut out = [[0.0; 2]; 5];
    // The 5-point model always yields 5 parts; a different model file would be caught here.
    for (o, q) in out.iter_mut().zip(parts.iter()) {
        *o = [q.x() as f64, q.y() as f64];
    }
    out
}

/// Copies an RGB image into a dlib matrix.
fn to_matrix(img: &RgbImage) -> ImageMatrix {
    // SAFETY: `ImageMatrix::new` reads exactly width * height * 3 bytes from the pointer,
    // which is the length of an RgbImage's buffer.
    unsafe { ImageMatrix::new(img.width() as usize, img.height() as usize, img.as_raw().as_ptr()) }
}

// The pack engineer moves one aligner into each rayon worker.
const _: fn() = || {
    fn assert_send<T: Send>() {}
    assert_send::<FaceAligner>();
};

/// Refuses to run dlib code built with AVX2 (see `.cargo/config.toml`) on a CPU without it: an
/// illegal-instruction crash in the middle of a pack would say nothing useful.
fn check_cpu() -> anyhow::Result<()> {
    #[cfg(all(facekit_dlib_avx2, target_arch = "x86_64"))]
    anyhow::ensure!(
        std::arch::is_x86_feature_detected!("avx2"),
        "this facekit was built with AVX2 for dlib (CXXFLAGS_x86_64_unknown_linux_gnu=-mavx2, from .cargo/config.toml) \
         but this CPU has no AVX2: rebuild with CXXFLAGS_x86_64_unknown_linux_gnu=\"\" set in the environment"
    );
    #[cfg(all(facekit_dlib_avx, target_arch = "x86_64"))]
    anyhow::ensure!(
        std::arch::is_x86_feature_detected!("avx"),
        "this facekit was built with AVX for dlib (CXXFLAGS_x86_64_unknown_linux_gnu=-mavx) but this CPU has no AVX: \
         rebuild with CXXFLAGS_x86_64_unknown_linux_gnu=\"\" set in the environment"
    );
    Ok(())
}

