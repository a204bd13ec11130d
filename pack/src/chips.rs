//! Face chips for new photos, cut exactly as a packed dataset's were (`facekit eval make-bin
//! --like`): the dataset's manifest says how its faces were detected and aligned and how its
//! records were encoded ([`ChipRecipe::like`]), and [`ChipMaker`] runs the pack's own steps on a
//! photo (bounded read, [`crate::photo::decode_image`], dlib detection, dlib's `get_face_chip` or
//! the ArcFace alignment, encoding), so a verification chip of a photo is the record `facekit pack`
//! made of it. A dataset imported from insightface's `.rec` files holds ArcFace-aligned chips: its
//! photos are cut by the ArcFace alignment with dlib's HOG detector and 68-point landmarks, the
//! nearest this facekit has to the detector insightface's data was aligned with.
//! A verification set aligned differently from the training data scores far below what the
//! network can do (insightface #1107); this module is what prevents that.
//!
//! Chips are JPEG or PNG, the encodings an insightface `.bin` holds: a JPEG dataset's chips are
//! JPEG at its quality and chroma subsampling (byte-identical to its records), a PNG dataset's
//! PNG, and a `raw` or `rawzstd` dataset's PNG, which is lossless and so pixel-identical to its
//! records (a JPEG would add loss the training chips never had).

use crate::align::{Alignment, ChipSpec, DetectorKind, FaceAligner, METHOD_ARCFACE, METHOD_DLIB};
use crate::encode::Chroma;
use crate::rejects::RejectsLog;
use crate::worker;
use crate::RejectReason;
use anyhow::{bail, Context, Result};
use facekit_shard::manifest::{AlignmentInfo, EncodingInfo};
use facekit_shard::Encoding;
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// How a dataset's chips are made, as its manifest records it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChipRecipe {
    /// The face detector the dataset was packed with (HOG for an imported dataset).
    pub detector: DetectorKind,
    /// The alignment the dataset's chips were cut with.
    pub alignment: Alignment,
    /// Chip size and padding.
    pub spec: ChipSpec,
    /// The encoding of the chips made: JPEG or PNG (see the module doc).
    pub encoding: Encoding,
    /// JPEG quality (JPEG only).
    pub quality: u8,
    /// JPEG chroma subsampling (JPEG only).
    pub chroma: Chroma,
    /// Whether the chips are byte-identical to the dataset's records (packed JPEG and PNG
    /// datasets); otherwise they are pixel-identical (PNG for a raw dataset) or, for an imported
    /// dataset, cut the same way by a detector other than its makers'.
    pub same_bytes_as_records: bool,
}

impl ChipRecipe {
    /// The recipe of a dataset with this manifest `alignment` and `encoding`, or why its chips
    /// cannot be reproduced from photos: no alignment recorded (records stored as given),
    /// alignment from a `--landmarks` file (new photos have no landmark lines), a method, template
    /// or interpolation this facekit does not know, or a build without face detection (feature
    /// `dlib`). A dataset imported from MXNet RecordIO (method `pre-aligned ...`, template
    /// `arcface5`) is cut by the ArcFace alignment at its image size.
    pub fn like(alignment: Option<&AlignmentInfo>, encoding: &EncodingInfo) -> Result<Self> {
        let Some(a) = alignment else {
            bail!(
                "the dataset records no alignment (its images were stored as given), \
                 so facekit cannot cut chips from photos the way they were cut; align the photos as that data's makers did"
            );
        };
        if a.detector == "landmarks-file" {
            bail!(
                "the dataset was aligned from a --landmarks file ({} template): new photos have no landmark lines, \
                 and aligning them by detection would cut other chips",
                a.template
            );
        }
        let imported = a.method.starts_with("pre-aligned") && a.template == Alignment::Arcface.template().name();
        let alignment = match (a.method.as_str(), a.template.as_str()) {
            _ if imported => Alignment::Arcface,
            (METHOD_DLIB, t) if t == Alignment::Dlib.template().name() => Alignment::Dlib,
            (METHOD_ARCFACE, t) if t == Alignment::Arcface.template().name() => Alignment::Arcface,
            _ => bail!(
                "the dataset was aligned by {:?} with template {:?}, which this facekit cannot reproduce",
                a.method,
                a.template
            ),
        };
        // An importer does not know how the chips were sampled (insightface's are cv2's bilinear).
        if !imported && a.interpolation != "bilinear" {
            bail!(
                "the dataset's chips were sampled with {:?} interpolation; this facekit samples bilinearly",
                a.interpolation
            );
        }
        let detector = match a.detector.as_str() {
            "hog" => DetectorKind::Hog,
            "cnn" => DetectorKind::Cnn,
            "none" if imported => DetectorKind::Hog,
            other => bail!("the dataset was packed with detector {other:?}, which this facekit does not have"),
        };
        let spec = ChipSpec { size: a.size, padding: a.padding };
        spec.validate().context("the dataset's alignment")?;
        // An imported dataset's template points are the importer's description, not a record of
        // how the chips were cut: only a packed dataset's must be this facekit's.
        let expected = alignment.template().points(&spec);
        let same_template = a.template_points.len() == expected.len()
            && a.template_points
                .iter()
                .zip(&expected)
                .all(|(p, q)| (p[0] - q[0]).abs() < 1e-6 && (p[1] - q[1]).abs() < 1e-6);
        if !imported && !same_template {
            bail!(
                "the dataset's template points differ from this facekit's {} template at size {} padding {}",
                alignment.template().name(),
                a.size,
                a.padding
            );
        }
        if (encoding.width, encoding.height) != (a.size, a.size) {
            bail!(
                "the dataset's records are {}x{}, its alignment says {} pixels",
                encoding.width,
                encoding.height,
                a.size
            );
        }
        let (chip_encoding, quality, chroma) = match encoding.format {
            Encoding::Jpeg => {
                // Imported JPEGs record no quality: insightface's are cv2.imencode's default, 95.
                let quality = match encoding.quality {
                    None if imported => 95,
                    q => q.filter(|q| (1..=100).contains(q)).context("the JPEG dataset records no quality (1-100)")?,
                };
                let chroma = match encoding.chroma.as_deref() {
                    // Packs before `--chroma` existed wrote 4:2:0.
                    None | Some("420") => Chroma::S420,
                    Some("444") => Chroma::S444,
                    Some(other) => bail!("the dataset's JPEG chroma subsampling {other:?} is neither 420 nor 444"),
                };
                (Encoding::Jpeg, quality, chroma)
            }
            Encoding::Png | Encoding::Raw | Encoding::RawZstd => (Encoding::Png, 0, Chroma::default()),
        };
        if !crate::align::dlib::AVAILABLE {
            bail!("this facekit was built without face detection (feature `dlib`), so it cannot align photos like the dataset");
        }
        Ok(ChipRecipe {
            detector,
            alignment,
            spec,
            encoding: chip_encoding,
            quality,
            chroma,
            same_bytes_as_records: !imported && matches!(encoding.format, Encoding::Jpeg | Encoding::Png),
        })
    }
}

/// Why a photo gave no chip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The reason, as `facekit pack` counts it.
    pub reason: RejectReason,
    /// What happened, for the rejects list.
    pub detail: String,
}

/// Makes chips by a [`ChipRecipe`]: one detector, so one per thread (`Send`, not `Sync`).
pub struct ChipMaker {
    recipe: ChipRecipe,
    aligner: FaceAligner,
}

impl ChipMaker {
    /// Loads the detector and landmark models from `models` (default `./models`).
    pub fn new(recipe: &ChipRecipe, models: Option<&Path>) -> Result<Self> {
        let aligner = FaceAligner::open(models, recipe.detector, recipe.spec, recipe.alignment)?;
        Ok(ChipMaker { recipe: recipe.clone(), aligner })
    }

    /// The encoded chip of the photo at `path`, by the steps and the code `facekit pack` runs on it.
    pub fn chip(&self, path: &Path) -> Result<Vec<u8>, Rejection> {
        let r = &self.recipe;
        let made = worker::read_limited(path)
            .and_then(|bytes| worker::decode(&bytes))
            .and_then(|img| worker::detect(&self.aligner, &img))
            .and_then(|(chip, _, _)| worker::encode(&chip, r.encoding, r.quality, r.chroma));
        made.map_err(|(reason, detail)| Rejection { reason, detail })
    }
}

/// The chips of `photos` in order, made on `threads` threads (a detector each), with a progress
/// bar when `progress`. A photo without a usable face is a [`Rejection`] in its place; missing
/// models are an error before any photo is read.
pub fn make_chips(
    recipe: &ChipRecipe,
    models: Option<&Path>,
    photos: &[PathBuf],
    threads: usize,
    progress: bool,
) -> Result<Vec<Result<Vec<u8>, Rejection>>> {
    let first = ChipMaker::new(recipe, models)?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .thread_name(|i| format!("facekit-chips-{i}"))
        .build()
        .context("cannot start worker threads")?;
    let bar = facekit_io::progress::items(photos.len() as u64, "photos");
    if !progress {
        facekit_io::progress::hide(&bar);
    }
    // rayon calls `map_init`'s init once per piece of work it splits off, not once per thread:
    // makers go back to `free` when a piece is done, so the models load about once per thread.
    let free = Mutex::new(vec![first]);
    let out = pool.install(|| {
        photos
            .par_iter()
            .map_init(
                || Lent { free: &free, maker: None },
                |lent, p| {
                    let maker = lent.maker.get_or_insert_with(|| {
                        let reused = free.lock().unwrap_or_else(|e| e.into_inner()).pop();
                        // The models loaded once already, so a failure here is not the user's data.
                        reused.unwrap_or_else(|| {
                            ChipMaker::new(recipe, models).expect("face models loaded before cannot load now")
                        })
                    });
                    let chip = maker.chip(p);
                    bar.inc(1);
                    chip
                },
            )
            .collect()
    });
    bar.finish_and_clear();
    Ok(out)
}

/// A photo listed in the rejects list of a `.bin` ([`list_rejects`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The photo.
    pub path: String,
    /// The reason code (`facekit pack`'s, or `missing_photo`, `missing_person`).
    pub reason: String,
    /// What happened.
    pub detail: String,
}

/// Lists every photo of `photos` that gave no chip (`made`, in the same order), then every photo
/// in `missing` (path, reason code, detail), in the rejects list `target`, which has the format
/// of `facekit pack`'s ([`crate::rejects`]) and appears whole. Returns what it listed.
pub fn list_rejects(
    target: &Path,
    photos: &[PathBuf],
    made: &[Result<Vec<u8>, Rejection>],
    missing: impl IntoIterator<Item = (PathBuf, &'static str, String)>,
) -> Result<Vec<Listed>> {
    let no_chip = photos.iter().zip(made).filter_map(|(file, chip)| {
        let r = chip.as_ref().err()?;
        Some(Listed { path: file.display().to_string(), reason: r.reason.code().into(), detail: r.detail.clone() })
    });
    let absent = missing.into_iter().map(|(path, reason, detail)| Listed {
        path: path.display().to_string(),
        reason: reason.into(),
        detail,
    });
    let listed: Vec<Listed> = no_chip.chain(absent).collect();
    let mut log = RejectsLog::create(target)?;
    for l in &listed {
        log.push_row(&l.path, &l.reason, &l.detail)?;
    }
    log.finish()?;
    Ok(listed)
}

/// A maker lent to one piece of rayon work, given back when it is dropped.
struct Lent<'a> {
    free: &'a Mutex<Vec<ChipMaker>>,
    maker: Option<ChipMaker>,
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        if let Some(m) = self.maker.take() {
            self.free.lock().unwrap_or_else(|e| e.into_inner()).push(m);
        }
    }
}
