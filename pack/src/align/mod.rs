//! Face detection, landmarks and alignment to a face chip.
//!
//! Pipeline: [`dlib`] finds the largest face and its landmarks (feature `dlib`), then, by the
//! [`Alignment`] chosen: [`align_dlib5`] cuts a chip from dlib's 5 landmarks with dlib's exact
//! `get_face_chip` geometry ([`chip`]), or [`align_arcface5`] aligns insightface-order points
//! (from the 68-point predictor, [`arcface_points_from_68`], or from a `--landmarks` file) to
//! the ArcFace template as insightface's `norm_crop` does. Geometry and sampling are pure Rust,
//! so training- and evaluation-only builds (no dlib) can align faces from given landmarks.
//!
//! Coordinates are image pixels with (0, 0) at the centre of the top-left pixel (dlib's and
//! OpenCV's convention).

pub mod chip;
pub mod dlib;
pub mod transform;

use image::RgbImage;

pub use chip::{extract_chip, ChipDetails};
pub use dlib::{AlignError, Aligned, DetectorKind, FaceAligner};
pub use transform::{Affine, Point2, Similarity};

/// Five facial landmarks in image pixels.
///
/// The order depends on the source and is named by [`LandmarkOrder`]:
/// - [`LandmarkOrder::Dlib5`] (dlib's `shape_predictor_5_face_landmarks`): 0 = outer corner of
///   the eye on the image's RIGHT side (the subject's left eye), 1 = inner corner of that eye,
///   2 = outer corner of the eye on the image's LEFT side, 3 = its inner corner, 4 = base of
///   the nose (subnasale);
/// - [`LandmarkOrder::InsightFace`] (RetinaFace / insightface, `--landmarks` files): 0 = eye
///   centre on the image's left, 1 = eye centre on the image's right, 2 = nose tip, 3 = mouth
///   corner on the image's left, 4 = mouth corner on the image's right.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Landmarks5 {
    /// The points, in `order`.
    pub points: [Point2; 5],
    /// Which landmark each index is.
    pub order: LandmarkOrder,
}

/// The landmark conventions we understand (see [`Landmarks5`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LandmarkOrder {
    /// dlib's 5-point predictor: eye corners and nose base.
    Dlib5,
    /// insightface: eye centres, nose tip, mouth corners.
    InsightFace,
}

impl Landmarks5 {
    /// Distance between the two eye centres in pixels (a face-size measure that does not
    /// depend on the detector's box).
    pub fn eye_distance(&self) -> f64 {
        let mid = |a: Point2, b: Point2| [(a[0] + b[0]) / 2.0, (a[1] + b[1]) / 2.0];
        let (l, r) = match self.order {
            LandmarkOrder::Dlib5 => (mid(self.points[2], self.points[3]), mid(self.points[0], self.points[1])),
            LandmarkOrder::InsightFace => (self.points[0], self.points[1]),
        };
        (l[0] - r[0]).hypot(l[1] - r[1])
    }
}

/// How detected faces are aligned (`--align`): which landmarks, which template, which warp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Alignment {
    /// dlib's `get_face_chip` from the 5-point predictor onto dlib's template (facekit's default).
    #[default]
    Dlib,
    /// insightface's `norm_crop`: five points (eye centres, nose tip, mouth corners) from dlib's
    /// 68-point predictor, least-squares similarity onto the ArcFace template.
    Arcface,
}

impl Alignment {
    /// Name on the command line and in pack checkpoints (`dlib`, `arcface`).
    pub fn name(&self) -> &'static str {
        match self {
            Alignment::Dlib => "dlib",
            Alignment::Arcface => "arcface",
        }
    }

    /// The template the chip's landmarks are moved onto.
    pub fn template(&self) -> Template {
        match self {
            Alignment::Dlib => Template::Dlib5,
            Alignment::Arcface => Template::ArcFace5,
        }
    }

    /// `alignment.method` in manifests.
    pub fn method(&self) -> &'static str {
        match self {
            Alignment::Dlib => METHOD_DLIB,
            Alignment::Arcface => METHOD_ARCFACE,
        }
    }

    /// The chip when no size or padding is given: 224 px with padding 0.25 for dlib, insightface's
    /// 112 px without padding for ArcFace.
    pub fn default_spec(&self) -> ChipSpec {
        match self {
            Alignment::Dlib => ChipSpec::default(),
            Alignment::Arcface => ChipSpec::arcface(),
        }
    }
}

/// `alignment.method` of chips cut by dlib's `get_face_chip`.
pub const METHOD_DLIB: &str = "dlib-get-face-chip";
/// `alignment.method` of chips warped onto the ArcFace template (insightface's `norm_crop`).
pub const METHOD_ARCFACE: &str = "arcface5-similarity-warp";

/// The five ArcFace points (insightface order: eye centres left then right in the image, nose
/// tip, mouth corners left then right) from the 68 points of dlib's iBUG predictor: each eye
/// centre is the mean of that eye's six points (36-41 on the image's left, 42-47 on its right),
/// the nose tip is point 30, the mouth corners 48 and 54 (0-based). `None` unless 68 points.
pub fn arcface_points_from_68(parts: &[Point2]) -> Option<[Point2; 5]> {
    if parts.len() != 68 {
        return None;
    }
    let mean = |r: std::ops::Range<usize>| {
        let s = parts[r].iter().fold([0.0, 0.0], |a, p| [a[0] + p[0], a[1] + p[1]]);
        [s[0] / 6.0, s[1] / 6.0]
    };
    Some([mean(36..42), mean(42..48), parts[30], parts[48], parts[54]])
}

/// Output size and margin of a face chip.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChipSpec {
    /// Side of the square chip in pixels.
    pub size: u32,
    /// Margin around the template, as a fraction of the template box on each side (dlib's
    /// meaning: 0.25 adds a quarter of the face width left and right). 0 with
    /// [`Template::ArcFace5`] and size 112 is insightface's standard crop.
    pub padding: f64,
}

impl Default for ChipSpec {
    fn default() -> Self {
        ChipSpec { size: 224, padding: 0.25 }
    }
}

impl ChipSpec {
    /// insightface's standard 112x112 ArcFace crop (no extra padding).
    pub fn arcface() -> Self {
        ChipSpec { size: 112, padding: 0.0 }
    }

    /// Checks the spec is usable (size 8..=4096, padding 0..=4, finite).
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!((8..=4096).contains(&self.size), "chip size {} is outside 8..=4096 pixels", self.size);
        anyhow::ensure!(
            self.padding.is_finite() && (0.0..=4.0).contains(&self.padding),
            "chip padding {} is outside 0..=4",
            self.padding
        );
        Ok(())
    }
}

/// A landmark template: where the 5 points should land in the chip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Template {
    /// dlib's 5-point face-chip template (`get_face_chip_details`), dlib landmark order.
    Dlib5,
    /// insightface's 112x112 ArcFace template, insightface landmark order.
    ArcFace5,
}

/// dlib's template in units of the face box (from `get_face_chip_details`).
const DLIB5_UNIT: [Point2; 5] = [
    [0.8595674595992, 0.2134981538014],
    [0.6460604764104, 0.2289674387677],
    [0.1205750620789, 0.2137274526848],
    [0.3340850613712, 0.2290642403242],
    [0.4901123135679, 0.6277975316475],
];

/// insightface's `arcface_dst` for a 112x112 chip, in pixels.
const ARCFACE5_112: [Point2; 5] =
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]];

impl Template {
    /// Name stored in manifests.
    pub fn name(&self) -> &'static str {
        match self {
            Template::Dlib5 => "dlib5",
            Template::ArcFace5 => "arcface5",
        }
    }

    /// Landmark order the template expects.
    pub fn order(&self) -> LandmarkOrder {
        match self {
            Template::Dlib5 => LandmarkOrder::Dlib5,
            Template::ArcFace5 => LandmarkOrder::InsightFace,
        }
    }

    /// Template points in output pixels for `spec`: unit points `p` become
    /// `(padding + p) / (1 + 2 padding) * size`, exactly dlib's formula; except the ArcFace
    /// template without padding at a size insightface's `estimate_norm` accepts, which is
    /// insightface's own scaling: `arcface_dst * size / 112` for a multiple of 112, otherwise
    /// (a multiple of 128) `arcface_dst * size / 128` moved right by `8 * size / 128`.
    pub fn points(&self, spec: &ChipSpec) -> [Point2; 5] {
        if *self == Template::ArcFace5
            && spec.padding == 0.0
            && (spec.size.is_multiple_of(112) || spec.size.is_multiple_of(128))
        {
            let size = f64::from(spec.size);
            let (ratio, diff_x) =
                if spec.size.is_multiple_of(112) { (size / 112.0, 0.0) } else { (size / 128.0, 8.0 * size / 128.0) };
            return ARCFACE5_112.map(|p| [p[0] * ratio + diff_x, p[1] * ratio]);
        }
        let unit: [Point2; 5] = match self {
            Template::Dlib5 => DLIB5_UNIT,
            Template::ArcFace5 => ARCFACE5_112.map(|p| [p[0] / 112.0, p[1] / 112.0]),
        };
        let size = f64::from(spec.size);
        let k = 2.0 * spec.padding + 1.0;
        unit.map(|p| [(spec.padding + p[0]) / k * size, (spec.padding + p[1]) / k * size])
    }
}

/// Cuts a face chip from dlib 5-point landmarks ([`LandmarkOrder::Dlib5`]) exactly as
/// `dlib.get_face_chip(img, shape, size, padding)` does.
pub fn align_dlib5(img: &RgbImage, dlib_points: &[[f64; 2]; 5], spec: &ChipSpec) -> RgbImage {
    let details = dlib5_chip_details(dlib_points, spec);
    extract_chip(img, &details)
}

/// dlib's `get_face_chip_details` for 5 points.
pub fn dlib5_chip_details(dlib_points: &[[f64; 2]; 5], spec: &ChipSpec) -> ChipDetails {
    let from = Template::Dlib5.points(spec);
    ChipDetails::from_points(&from, dlib_points, spec.size, spec.size)
}

/// The chip-to-image transform used by [`align_arcface5`]: the least-squares similarity
/// taking the landmarks onto the template (as insightface's `estimate_norm`), inverted.
pub fn arcface5_transform(points: &[[f64; 2]; 5], spec: &ChipSpec) -> Option<Affine> {
    let dst = Template::ArcFace5.points(spec);
    Similarity::fit(points, &dst).to_affine().inverse()
}

/// Aligns insightface-order landmarks ([`LandmarkOrder::InsightFace`]) to the ArcFace
/// template: a similarity warp with bilinear sampling (as insightface's
/// `norm_crop`/`cv2.warpAffine`), outside pixels black. Degenerate landmarks (all points
/// equal) give a black chip.
pub fn align_arcface5(img: &RgbImage, points: &[[f64; 2]; 5], spec: &ChipSpec) -> RgbImage {
    match arcface5_transform(points, spec) {
        Some(t) => chip::warp_affine(img, &t, spec.size, spec.size),
        None => RgbImage::new(spec.size, spec.size),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arcface_template_at_112_without_padding_is_insightfaces() {
        let p = Template::ArcFace5.points(&ChipSpec::arcface());
        for (a, b) in p.iter().zip(ARCFACE5_112.iter()) {
            assert!((a[0] - b[0]).abs() < 1e-9 && (a[1] - b[1]).abs() < 1e-9);
        }
    }

    #[test]
    fn arcface_template_follows_insightfaces_estimate_norm_at_other_sizes() {
        // estimate_norm: image_size % 112 == 0 -> ratio size/112, no shift; else (% 128 == 0)
        // ratio size/128 and 8 * ratio to the right. 448 is a multiple of both: 112 wins.
        for (size, ratio, dx) in [(224, 2.0, 0.0), (128, 1.0, 8.0), (256, 2.0, 16.0), (448, 4.0, 0.0)] {
            let p = Template::ArcFace5.points(&ChipSpec { size, padding: 0.0 });
            for (a, b) in p.iter().zip(ARCFACE5_112.iter()) {
                assert!((a[0] - (b[0] * ratio + dx)).abs() < 1e-9 && (a[1] - b[1] * ratio).abs() < 1e-9, "{size}");
            }
        }
    }

    #[test]
    fn arcface_points_from_68_are_eye_means_nose_tip_and_mouth_corners() {
        let parts: Vec<Point2> = (0..68).map(|i| [f64::from(i), f64::from(i * i)]).collect();
        let p = arcface_points_from_68(&parts).unwrap();
        let mean = |r: std::ops::Range<i32>| {
            let n = f64::from(r.len() as i32);
            [r.clone().map(f64::from).sum::<f64>() / n, r.map(|i| f64::from(i * i)).sum::<f64>() / n]
        };
        assert_eq!(p, [mean(36..42), mean(42..48), [30.0, 900.0], [48.0, 2304.0], [54.0, 2916.0]]);
        assert!(arcface_points_from_68(&parts[..5]).is_none());
    }

    #[test]
    fn dlib_template_with_padding_shrinks_towards_the_centre() {
        let spec = ChipSpec::default();
        let p = Template::Dlib5.points(&spec);
        // (0.25 + 0.8595674595992) / 1.5 * 224
        assert!((p[0][0] - (0.25 + 0.8595674595992) / 1.5 * 224.0).abs() < 1e-9);
        assert!(p.iter().all(|q| q[0] > 224.0 * 0.25 / 1.5 && q[0] < 224.0 * 1.25 / 1.5));
    }

    #[test]
    fn eye_distance_uses_eye_centres_in_both_orders() {
        let d = Landmarks5 {
            points: [[60.0, 10.0], [50.0, 10.0], [0.0, 10.0], [10.0, 10.0], [30.0, 30.0]],
            order: LandmarkOrder::Dlib5,
        };
        assert!((d.eye_distance() - 50.0).abs() < 1e-12);
        let i = Landmarks5 {
            points: [[5.0, 10.0], [55.0, 10.0], [30.0, 30.0], [0.0, 0.0], [0.0, 0.0]],
            order: LandmarkOrder::InsightFace,
        };
        assert!((i.eye_distance() - 50.0).abs() < 1e-12);
    }

    #[test]
    fn invalid_chip_specs_are_rejected() {
        assert!(ChipSpec { size: 2, padding: 0.25 }.validate().is_err());
        assert!(ChipSpec { size: 224, padding: f64::NAN }.validate().is_err());
        assert!(ChipSpec::default().validate().is_ok());
    }
}
