//! The dlib half of the facade (feature `dlib`): detector and landmark predictor in one
//! [`FaceAligner`].

use super::{
    models_dir, AlignError, Aligned, Detection, DetectorKind, FaceBox, CNN_MODEL, ENCODER_MODEL, ENCODING_DIM,
    LANDMARKS68_MODEL, LANDMARKS_MODEL, MAX_UPSAMPLE_PIXELS, MIN_EYE_DISTANCE,
};
use crate::align::{align_arcface5, align_dlib5, arcface_points_from_68, Alignment, ChipSpec, Landmarks5};
use anyhow::Context;
use dlib_face_recognition::{
    FaceDetector, FaceDetectorCnn, FaceDetectorTrait, FaceEncoderNetwork, FaceEncoderTrait, ImageMatrix,
    LandmarkPredictor, LandmarkPredictorTrait, Rectangle,
};
use image::RgbImage;
use std::path::{Path, PathBuf};

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
    alignment: Alignment,
    min_eye_distance: f64,
}

impl FaceAligner {
    /// Loads the models from `models` (see [`models_dir`]) for the given detector and chip, with
    /// dlib's alignment ([`Alignment::Dlib`]).
    pub fn new(models: Option<&Path>, kind: DetectorKind, spec: ChipSpec) -> anyhow::Result<FaceAligner> {
        Self::open(models, kind, spec, Alignment::Dlib)
    }

    /// Loads the models for the given detector, chip and alignment (the 68-point landmark model
    /// for [`Alignment::Arcface`], the 5-point one for [`Alignment::Dlib`]).
    pub fn open(
        models: Option<&Path>,
        kind: DetectorKind,
        spec: ChipSpec,
        alignment: Alignment,
    ) -> anyhow::Result<FaceAligner> {
        spec.validate()?;
        check_cpu()?;
        let dir = models_dir(models);
        let lm = model_file(
            &dir,
            match alignment {
                Alignment::Dlib => LANDMARKS_MODEL,
                Alignment::Arcface => LANDMARKS68_MODEL,
            },
        )?;
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
        let aligner = FaceAligner { detector, predictor, kind, spec, alignment, min_eye_distance: MIN_EYE_DISTANCE };
        // A model file with another number of points would give wrong faces silently: try it once.
        let probe = RgbImage::new(8, 8);
        let parts = aligner.parts(&to_matrix(&probe), FaceBox { left: 0, top: 0, right: 7, bottom: 7 }).len();
        let want = match alignment {
            Alignment::Dlib => 5,
            Alignment::Arcface => 68,
        };
        anyhow::ensure!(parts == want, "landmark model {} gives {parts} points, not {want}", lm.display());
        Ok(aligner)
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

    /// The alignment in use.
    pub fn alignment(&self) -> Alignment {
        self.alignment
    }

    fn run_detector(&self, m: &ImageMatrix) -> Vec<FaceBox> {
        let rects = match &self.detector {
            Detector::Hog(d) => d.face_locations(m),
            Detector::Cnn(d) => d.face_locations(m),
        };
        rects.iter().map(from_dlib).collect()
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
        let faces = self.run_detector(&up).into_iter().map(pyramid_down).collect();
        Detection { faces, upsampled: true }
    }

    /// The five landmarks of `face` in source pixels, in the order of the alignment's template
    /// (dlib's 5 points, or the ArcFace points taken from the 68).
    pub fn landmarks(&self, img: &RgbImage, face: FaceBox) -> [[f64; 2]; 5] {
        self.five(&to_matrix(img), face)
    }

    /// All the predictor's points of `face` (5 or 68), in source pixels.
    pub fn all_landmarks(&self, img: &RgbImage, face: FaceBox) -> Vec<[f64; 2]> {
        self.parts(&to_matrix(img), face)
    }

    fn parts(&self, m: &ImageMatrix, face: FaceBox) -> Vec<[f64; 2]> {
        let parts = self.predictor.face_landmarks(m, &to_dlib(face));
        parts.iter().map(|q| [q.x() as f64, q.y() as f64]).collect()
    }

    fn five(&self, m: &ImageMatrix, face: FaceBox) -> [[f64; 2]; 5] {
        let parts = self.parts(m, face);
        match self.alignment {
            Alignment::Dlib => {
                let mut out = [[0.0; 2]; 5];
                // The model was checked to give 5 points when it loaded.
                for (o, q) in out.iter_mut().zip(&parts) {
                    *o = *q;
                }
                out
            }
            Alignment::Arcface => arcface_points_from_68(&parts).expect("the model was checked to give 68 points"),
        }
    }

    /// Detects the largest face, predicts its landmarks and cuts the chip.
    pub fn align(&self, img: &RgbImage) -> Result<Aligned, AlignError> {
        let m = to_matrix(img);
        let det = self.detect_matrix(&m, img.width(), img.height());
        let face = det.largest().ok_or(AlignError::NoFace)?;
        let landmarks = self.five(&m, face);
        let order = self.alignment.template().order();
        let eye_distance = Landmarks5 { points: landmarks, order }.eye_distance();
        if eye_distance < self.min_eye_distance {
            return Err(AlignError::TooSmall { eye_distance, min: self.min_eye_distance });
        }
        let chip = match self.alignment {
            Alignment::Dlib => align_dlib5(img, &landmarks, &self.spec),
            Alignment::Arcface => align_arcface5(img, &landmarks, &self.spec),
        };
        Ok(Aligned { chip, faces: det.faces.len(), upsampled: det.upsampled, landmarks, face })
    }
}

/// dlib's face encoder (`dlib_face_recognition_resnet_model_v1.dat`) over aligned chips: finds
/// the face on the chip (HOG, upsampled 2x when needed; the chip's central box where none is
/// found, since a chip is a face by construction), its 5 landmarks, and the 128-d descriptor of
/// dlib's own 150 px chip cut from them. `Send`, not `Sync`: one per thread.
pub struct FaceEncoder {
    aligner: FaceAligner,
    net: FaceEncoderNetwork,
}

impl FaceEncoder {
    /// Loads the encoder, detector and landmark models from `models` (see [`models_dir`]).
    pub fn new(models: Option<&Path>) -> anyhow::Result<FaceEncoder> {
        let aligner = FaceAligner::new(models, DetectorKind::Hog, crate::align::ChipSpec::default())?;
        let p = model_file(&models_dir(models), ENCODER_MODEL)?;
        let net = FaceEncoderNetwork::open(&p)
            .map_err(|e| anyhow::anyhow!(e))
            .with_context(|| format!("loading dlib face encoder {}", p.display()))?;
        Ok(FaceEncoder { aligner, net })
    }

    /// The descriptor of the face on `chip` ([`ENCODING_DIM`] values, not normalised), and
    /// whether a detector found it (otherwise the central box stood in).
    pub fn encode(&self, chip: &RgbImage) -> anyhow::Result<(Vec<f32>, bool)> {
        let m = to_matrix(chip);
        let (w, h) = (chip.width() as i64, chip.height() as i64);
        let det = self.aligner.detect_matrix(&m, chip.width(), chip.height());
        let (face, found) = match det.largest() {
            Some(f) => (f, true),
            // dlib's HOG boxes of aligned chips lie about 1/8 inside each edge.
            None => (FaceBox { left: w / 8, top: h / 8, right: w - w / 8, bottom: h - h / 8 }, false),
        };
        let landmarks = self.aligner.predictor.face_landmarks(&m, &to_dlib(face));
        let encodings = self.net.get_face_encodings(&m, &[landmarks], 0);
        let values: Vec<f32> =
            encodings.iter().next().map(|e| e.as_ref().iter().map(|&v| v as f32).collect()).unwrap_or_default();
        anyhow::ensure!(
            values.len() == ENCODING_DIM,
            "dlib's face encoder gave {} values, not {ENCODING_DIM}",
            values.len()
        );
        Ok((values, found))
    }
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
    assert_send::<FaceEncoder>();
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

fn from_dlib(r: &Rectangle) -> FaceBox {
    FaceBox { left: r.left, top: r.top, right: r.right, bottom: r.bottom }
}

fn to_dlib(f: FaceBox) -> Rectangle {
    Rectangle { left: f.left as _, top: f.top as _, right: f.right as _, bottom: f.bottom as _ }
}

/// Maps a box found on a `pyramid_up` image back to the original (dlib's
/// `pyramid_down<2>::rect_down`, then rounding each edge with `floor(x + 0.5)`).
fn pyramid_down(f: FaceBox) -> FaceBox {
    let r = |v: i64, off: f64| (v as f64 / 2.0 - off + 0.5).floor() as i64;
    FaceBox { left: r(f.left, 1.25), top: r(f.top, 0.75), right: r(f.right, 1.25), bottom: r(f.bottom, 0.75) }
}

fn model_file(dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let p = dir.join(name);
    anyhow::ensure!(
        p.is_file(),
        "dlib model {} not found (models folder {}; run scripts/setup.sh, or give --models or FACEKIT_MODELS)",
        p.display(),
        dir.display()
    );
    Ok(p)
}
