//! Turning one input file into a record, or into a reason why not: read, hash, decode, align
//! (from `--landmarks` or by detection), encode, label. Pure per file, so any thread may run it and
//! the result is the same.

use super::attributes::{utkface_attributes, AttributeTable, Attributes};
use super::inputs::InputFile;
use super::landmarks::{KnownLandmarks, LandmarkTable};
use crate::align::{align_arcface5, ChipSpec, LandmarkOrder, Landmarks5};
use crate::encode as codec;
use crate::encode::Chroma;
use crate::photo::decode_image;
use crate::reason::RejectReason;
use facekit_shard::format::MAX_PATH_LEN;
use facekit_shard::{Encoding, Labels, Record};
use image::RgbImage;
use sha2::{Digest, Sha256};

/// Smallest eye distance, in source pixels, accepted from a landmarks file.
pub(crate) const MIN_LANDMARK_EYE_DISTANCE: f64 = 2.0;
/// How far outside the photo a landmark may lie, as a fraction of the landmarks' own extent.
pub(crate) const LANDMARK_MARGIN: f64 = 0.5;

/// Per-pack settings every worker shares (read-only).
pub(crate) struct WorkerConfig {
    /// Chip geometry.
    pub spec: ChipSpec,
    /// Record encoding.
    pub encoding: Encoding,
    /// JPEG quality.
    pub quality: u8,
    /// JPEG chroma subsampling.
    pub chroma: Chroma,
    /// `--landmarks`: when given, every image must have a line (one alignment per dataset).
    pub landmarks: Option<LandmarkTable>,
    /// `--attributes`.
    pub attributes: Option<AttributeTable>,
    /// `--utkface-labels`.
    pub utkface_labels: bool,
}

/// A face that made it into a record.
#[derive(Debug)]
pub struct Packed {
    /// The record to write.
    pub record: Record,
    /// Faces the detector found (1 with landmarks).
    pub faces: usize,
    /// Whether the face needed upsampling to be found.
    pub upsampled: bool,
    /// Whether the face was aligned from `--landmarks`.
    pub from_landmarks: bool,
}

/// The result for one input file.
#[derive(Debug)]
pub enum Outcome {
    /// Packed into a record.
    Packed(Box<Packed>),
    /// Rejected: why, and the detail for the rejects list.
    Rejected(RejectReason, String),
}

/// The face detector a worker thread uses, created on first need (see [`crate::align::dlib`]).
pub(crate) type Detector = crate::align::FaceAligner;

/// Why a file gave no record: the reason and the detail for the rejects list.
pub type Rejection = (RejectReason, String);

/// Processes one file. `detector` is `None` when the pack uses `--landmarks` only.
pub fn process(cfg: &WorkerConfig, f: &InputFile, detector: Option<&Detector>) -> Outcome {
    match try_process(cfg, f, detector) {
        Ok(p) => Outcome::Packed(Box::new(p)),
        Err((reason, detail)) => Outcome::Rejected(reason, detail),
    }
}

fn try_process(cfg: &WorkerConfig, f: &InputFile, detector: Option<&Detector>) -> Result<Packed, Rejection> {
    if let Some(misplaced) = &f.misplaced {
        return Err(misplaced.clone());
    }
    if f.record_path.len() > MAX_PATH_LEN as usize {
        return Err((
            RejectReason::PathTooLong,
            format!("{} bytes; shards store at most {MAX_PATH_LEN}", f.record_path.len()),
        ));
    }
    let known = match &cfg.landmarks {
        Some(table) => match table.get(&f.rel, &f.file) {
            Some(l) => Some(l),
            None => return Err((RejectReason::NoLandmarks, "no line for this path in the landmarks file".into())),
        },
        None => None,
    };
    let bytes = read_limited(&f.file)?;
    let img = decode(&bytes)?;
    let (chip, faces, upsampled) = match known {
        Some(l) => match align_known(&img, &l, &cfg.spec) {
            Ok(chip) => (chip, 1, false),
            Err(detail) => return Err((RejectReason::BadLandmarks, detail)),
        },
        None => detect(detector.expect("a pack without --landmarks always has a detector"), &img)?,
    };
    let data = encode(&chip, cfg.encoding, cfg.quality, cfg.chroma)?;
    let attrs = attributes_of(cfg, f);
    let mut origin_sha256 = [0u8; 16];
    origin_sha256.copy_from_slice(&Sha256::digest(&bytes)[..16]);
    let record = Record {
        labels: Labels { class_id: f.class, source: f.source, gender: attrs.gender, age: attrs.age },
        encoding: cfg.encoding,
        width: chip.width() as u16,
        height: chip.height() as u16,
        origin_sha256,
        path: f.record_path.clone(),
        data,
    };
    Ok(Packed { record, faces, upsampled, from_landmarks: known.is_some() })
}

/// Reads a photo: a regular file (a FIFO or device is listed, not waited on) of at most
/// [`facekit_io::bounded::PHOTO`] bytes (larger files are rejected as `too_large` without reading them).
pub(crate) fn read_limited(path: &std::path::Path) -> Result<Vec<u8>, Rejection> {
    facekit_io::bounded::read(path, facekit_io::bounded::PHOTO).map_err(|e| (RejectReason::from(&e), e.to_string()))
}

/// Decodes a photo's bytes ([`decode_image`]).
pub(crate) fn decode(bytes: &[u8]) -> Result<RgbImage, Rejection> {
    decode_image(bytes).map_err(|e| (e.reject_reason(), e.to_string()))
}

/// Encodes a chip as a record payload.
pub(crate) fn encode(chip: &RgbImage, encoding: Encoding, quality: u8, chroma: Chroma) -> Result<Vec<u8>, Rejection> {
    codec::encode_with(chip, encoding, quality, chroma).map_err(|e| (RejectReason::EncodeFailed, format!("{e:#}")))
}

/// Aligns from given landmarks. Points of a face at the border of a photo may lie a little outside
/// it (landmark detectors extrapolate; the chip is then black where the photo ends, as in
/// insightface's alignment), so a point is accepted up to [`LANDMARK_MARGIN`] of the landmarks' own
/// extent outside the photo, as long as the face's centre is inside. Refused are points that
/// cannot describe a face of this photo: far outside (a landmarks file made for resized photos,
/// swapped x/y) or collapsed.
fn align_known(img: &RgbImage, l: &KnownLandmarks, spec: &ChipSpec) -> Result<RgbImage, String> {
    let (w, h) = (f64::from(img.width()), f64::from(img.height()));
    let eyes = Landmarks5 { points: l.0, order: LandmarkOrder::InsightFace }.eye_distance();
    if !(eyes >= MIN_LANDMARK_EYE_DISTANCE) {
        return Err(format!("eye distance {eyes:.1} px is degenerate"));
    }
    let (mut lo, mut hi) = ([f64::INFINITY; 2], [f64::NEG_INFINITY; 2]);
    for p in &l.0 {
        for k in 0..2 {
            lo[k] = lo[k].min(p[k]);
            hi[k] = hi[k].max(p[k]);
        }
    }
    let centre = [(lo[0] + hi[0]) / 2.0, (lo[1] + hi[1]) / 2.0];
    if !(centre[0] >= -0.5 && centre[1] >= -0.5 && centre[0] <= w - 0.5 && centre[1] <= h - 0.5) {
        return Err(format!("the face's centre ({:.1}, {:.1}) is outside the {w}x{h} image", centre[0], centre[1]));
    }
    let margin = LANDMARK_MARGIN * (hi[0] - lo[0]).max(hi[1] - lo[1]);
    for (i, p) in l.0.iter().enumerate() {
        if p[0] < -0.5 - margin || p[1] < -0.5 - margin || p[0] > w - 0.5 + margin || p[1] > h - 0.5 + margin {
            return Err(format!(
                "point {} ({:.1}, {:.1}) is more than {margin:.1} px (half the face's extent) outside the {w}x{h} image",
                i + 1,
                p[0],
                p[1]
            ));
        }
    }
    Ok(align_arcface5(img, &l.0, spec))
}

/// Detects the largest face and cuts its chip: the chip, the faces found, whether upsampled.
pub(crate) fn detect(d: &Detector, img: &RgbImage) -> Result<(RgbImage, usize, bool), Rejection> {
    match d.align(img) {
        Ok(a) => Ok((a.chip, a.faces, a.upsampled)),
        Err(e) => Err((e.reject_reason(), e.to_string())),
    }
}

/// UTKFace name labels, overlaid by the CSV's identity line, then by its image line.
fn attributes_of(cfg: &WorkerConfig, f: &InputFile) -> Attributes {
    let mut a = Attributes::default();
    if cfg.utkface_labels {
        let name = f.rel.rsplit('/').next().unwrap_or(&f.rel);
        if let Some(u) = utkface_attributes(name) {
            a = u;
        }
    }
    if let Some(table) = &cfg.attributes {
        if let Some(csv) = table.get(&f.rel, f.identity_key.as_deref()) {
            a = a.overlay(csv);
        }
    }
    a
}
