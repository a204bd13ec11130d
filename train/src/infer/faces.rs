//! Turning image files into network-sized face chips for evaluation: aligned by the pack pipeline
//! (dlib detection + 5-point alignment, feature `dlib`), or, where no face is found or alignment
//! is off, insightface's centre-crop fallback.
//!
//! The fallback is `preprocess` of insightface's `common/face_preprocess.py` with neither
//! landmarks nor box: the box inset by 6.25% of the image on each side, grown by a 44-pixel margin
//! (22 per side), clamped to the image, resized to the chip. insightface's own LFW `.bin` files
//! are pre-aligned, so for them nothing falls back; for raw photos the fallback keeps every pair
//! in the protocol (never silently dropped) and the count is reported.

use crate::embedding::resize;
use crate::events::{Event, FaceWork, Observer};
use anyhow::{Context, Result};
use image::RgbImage;
use rayon::prelude::*;
use serde::Serialize;
use std::path::PathBuf;

/// How images become chips.
#[derive(Debug, Clone)]
pub enum Preparation {
    /// Detect and align with dlib as `facekit pack` does, centre crop where that fails (needs a
    /// build with dlib: without it, preparing fails at once with that message).
    Align {
        /// dlib models folder (default `./models`; the command line's `--models` defaults to
        /// `$FACEKIT_MODELS`).
        models: Option<PathBuf>,
        /// Chip padding, dlib's meaning (as `facekit pack --padding`).
        padding: f64,
        /// dlib's `get_face_chip` or the ArcFace alignment (as `facekit pack --align`).
        alignment: facekit_pack::align::Alignment,
    },
    /// Images are already aligned face chips: only resize.
    Resize,
    /// insightface's centre crop for every image.
    CentreCrop,
}

/// How each image was prepared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Prepared {
    /// Aligned on detected landmarks.
    Aligned,
    /// No usable face: insightface's centre crop.
    CentreCropFallback,
    /// Centre crop by request.
    CentreCrop,
    /// Resized as given.
    Resized,
}

/// Counts of how images were prepared.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PrepStats {
    /// Images aligned on landmarks.
    pub aligned: usize,
    /// Images where alignment failed and the centre crop was used.
    pub fallback: usize,
    /// Up to 10 of those, with the reason.
    pub fallback_examples: Vec<String>,
}

/// insightface's landmark-free crop (see the module doc), resized to `size` x `size`.
pub(crate) fn centre_crop(img: &RgbImage, size: u32) -> RgbImage {
    let (w, h) = (img.width() as i64, img.height() as i64);
    let (dx, dy) = ((w as f64 * 0.0625) as i64, (h as f64 * 0.0625) as i64);
    let (x0, y0) = ((dx - 22).max(0), (dy - 22).max(0));
    let (x1, y1) = ((w - dx + 22).min(w), (h - dy + 22).min(h));
    let crop = image::imageops::crop_imm(img, x0 as u32, y0 as u32, (x1 - x0).max(1) as u32, (y1 - y0).max(1) as u32)
        .to_image();
    resize(&crop, size)
}

/// Reads, decodes and prepares every file as a `size` x `size` chip, in parallel, telling `events`
/// how far it is ([`FaceWork::Preparing`]). An unreadable or undecodable file is an error naming it.
pub fn prepare_files(
    paths: &[PathBuf],
    size: u32,
    how: &Preparation,
    events: &Observer,
) -> Result<(Vec<RgbImage>, Vec<Prepared>, PrepStats)> {
    let work = FaceWork::Preparing;
    events.emit(Event::FacesBegin { work, total: paths.len() as u64, done: 0 });
    let decode = |p: &PathBuf| -> Result<RgbImage> {
        let bytes = facekit_io::bounded::read(p, facekit_io::bounded::PHOTO)?;
        facekit_pack::photo::decode_image(&bytes).with_context(|| format!("cannot decode {}", p.display()))
    };
    let out: Vec<Result<(RgbImage, Prepared, Option<String>)>> = match how {
        Preparation::Align { models, padding, alignment } => {
            let spec = facekit_pack::align::ChipSpec { size, padding: *padding };
            spec.validate()?;
            // Fail early on missing models instead of once per thread (the aligner is dropped at once:
            // `drop()` would be flagged in the build without dlib, whose aligner is never made).
            let hog = facekit_pack::align::DetectorKind::Hog;
            let _ = facekit_pack::align::FaceAligner::open(models.as_deref(), hog, spec, *alignment)?;
            paths
                .par_iter()
                .map_init(
                    || facekit_pack::align::FaceAligner::open(models.as_deref(), hog, spec, *alignment),
                    |aligner, p| {
                        let aligner = aligner.as_ref().map_err(|e| anyhow::anyhow!("{e:#}"))?;
                        let img = decode(p)?;
                        events.emit(Event::FacesDone { work, count: 1 });
                        Ok(match aligner.align(&img) {
                            Ok(a) => (a.chip, Prepared::Aligned, None),
                            Err(e) => (
                                centre_crop(&img, size),
                                Prepared::CentreCropFallback,
                                Some(format!("{}: {e}", p.display())),
                            ),
                        })
                    },
                )
                .collect()
        }
        Preparation::Resize | Preparation::CentreCrop => paths
            .par_iter()
            .map(|p| {
                let img = decode(p)?;
                events.emit(Event::FacesDone { work, count: 1 });
                Ok(if matches!(how, Preparation::Resize) {
                    (resize(&img, size), Prepared::Resized, None)
                } else {
                    (centre_crop(&img, size), Prepared::CentreCrop, None)
                })
            })
            .collect(),
    };
    events.emit(Event::FacesEnd { work });
    let mut stats = PrepStats::default();
    let (mut chips, mut how_each) = (Vec::with_capacity(paths.len()), Vec::with_capacity(paths.len()));
    for r in out {
        let (chip, prepared, why) = r?;
        match prepared {
            Prepared::Aligned => stats.aligned += 1,
            Prepared::CentreCropFallback => {
                stats.fallback += 1;
                if stats.fallback_examples.len() < 10 {
                    stats.fallback_examples.extend(why);
                }
            }
            _ => {}
        }
        chips.push(chip);
        how_each.push(prepared);
    }
    Ok((chips, how_each, stats))
}
