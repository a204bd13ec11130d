//! The faces of an IJB-B or IJB-C set through a network, as insightface's `eval_ijbc.py` prepares
//! them: each loose crop read, its five landmarks aligned onto the ArcFace template at the
//! network's input size (a similarity warp, black outside the image), embedded with and without a
//! mirror and the two summed, not normalised (the norm weighs the face in its template). The
//! protocol itself, pooling and figures, is [`facekit_eval::ijb`]; the features are cached by
//! [`FeatureKey`] so that a rerun with the same network and face list embeds nothing.

use super::embed::{embed_all, EmbedModel};
use crate::embedding::{Features, Scale};
use crate::events::Observer;
use anyhow::{Context, Result};
use facekit_eval::ijb::Face;
use facekit_pack::align::{align_arcface5, ChipSpec};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Mutex;

/// A face that got no feature, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaceFailure {
    /// Its line in the landmarks file, from 0 (its row in the features).
    pub index: usize,
    /// Its image name.
    pub name: String,
    /// Why: the image could not be read or decoded, or its landmarks line was unusable.
    pub reason: String,
}

/// Every face's raw feature (`faces * dim`; a face without one has a row of zeros), and the faces
/// that have none.
#[derive(Debug, Clone)]
pub struct FaceFeatures {
    /// Feature length.
    pub dim: usize,
    /// Row by row, one per face of the landmarks file.
    pub values: Vec<f32>,
    /// Faces without a feature, in order.
    pub failed: Vec<FaceFailure>,
}

impl FaceFeatures {
    /// Each face's feature, `None` for the faces that have none (as [`facekit_eval::ijb::pool_templates`] takes them).
    pub fn rows(&self) -> Vec<Option<&[f32]>> {
        let mut failed = self.failed.iter().map(|f| f.index).peekable();
        self.values
            .chunks(self.dim)
            .enumerate()
            .map(|(i, row)| {
                if failed.peek() == Some(&i) {
                    failed.next();
                    None
                } else {
                    Some(row)
                }
            })
            .collect()
    }
}

/// Features of every face of `faces`, images read from `images` (the set's `loose_crop/`), in
/// batches of `batch_size`; `events` hears how far it is. A face whose image cannot be read or
/// decoded, or whose landmarks are unusable, gets no feature and is listed in
/// [`FaceFeatures::failed`]; nothing else stops the work but a network whose features are not finite.
pub fn face_features(
    model: &EmbedModel,
    images: &Path,
    faces: &[Face],
    batch_size: usize,
    flip: bool,
    events: &Observer,
) -> Result<FaceFeatures> {
    let spec = ChipSpec { size: model.image_size(), padding: 0.0 };
    let failed = Mutex::new(Vec::new());
    let how = Features { flip, scale: Scale::Raw };
    let values = embed_all(model, faces.len(), batch_size, how, events, |i, buf| {
        let face = &faces[i];
        let chip = face.points.ok_or_else(|| "its landmarks line is unusable".to_string()).and_then(|points| {
            let path = facekit_io::bounded::confined_join(images, &face.name).map_err(|e| e.to_string())?;
            let img = facekit_pack::photo::read_image(&path).map_err(|e| format!("{e:#}"))?;
            Ok(align_arcface5(&img, &points, &spec))
        });
        match chip {
            Ok(chip) => buf.copy_from_slice(chip.as_raw()),
            Err(reason) => {
                buf.fill(0);
                failed.lock().unwrap_or_else(|p| p.into_inner()).push(FaceFailure {
                    index: i,
                    name: face.name.clone(),
                    reason,
                });
            }
        }
        Ok(())
    })
    .with_context(|| format!("faces under {}", images.display()))?;
    let mut failed = failed.into_inner().unwrap_or_else(|p| p.into_inner());
    failed.sort_by_key(|f| f.index);
    let dim = model.dim();
    let mut values = values;
    for f in &failed {
        values[f.index * dim..(f.index + 1) * dim].fill(0.0);
    }
    Ok(FaceFeatures { dim, values, failed })
}

/// What the cached features were computed from: a rerun whose key is equal reuses them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureKey {
    /// SHA-256 of the network's weights file.
    pub network_sha256: String,
    /// SHA-256 of the landmarks file (the face list: names, points, scores).
    pub faces_sha256: String,
    /// The image folder.
    pub images: String,
    /// Faces.
    pub faces: usize,
    /// Feature length.
    pub dim: usize,
    /// Side of the aligned chips.
    pub chip_size: u32,
    /// Flip test.
    pub flip: bool,
}

/// What `features.json` holds beside `features.npy`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FeatureFile {
    /// What they were computed from.
    pub key: FeatureKey,
    /// Faces without a feature (their rows are zeros).
    pub failed: Vec<FaceFailure>,
}

/// File names of the cache in an output folder.
pub const FEATURES_NPY: &str = "features.npy";
/// See [`FEATURES_NPY`].
pub const FEATURES_JSON: &str = "features.json";

/// The features an earlier run left in `dir` for the same `key`, if any and whole.
pub fn cached(dir: &Path, key: &FeatureKey) -> Option<FaceFeatures> {
    let bytes = std::fs::read(dir.join(FEATURES_JSON)).ok()?;
    let file: FeatureFile = serde_json::from_slice(&bytes).ok()?;
    if &file.key != key {
        return None;
    }
    let m = facekit_eval::npy::read_f32(&dir.join(FEATURES_NPY)).ok()?;
    (m.rows == key.faces && m.cols == key.dim && file.failed.iter().all(|f| f.index < key.faces))
        .then_some(FaceFeatures { dim: key.dim, values: m.data, failed: file.failed })
}

/// Writes the features and their key into `dir` (each file atomically).
pub fn save(dir: &Path, key: &FeatureKey, f: &FaceFeatures) -> Result<()> {
    facekit_eval::npy::write_f32(&dir.join(FEATURES_NPY), key.faces, key.dim, &f.values)?;
    let file = FeatureFile { key: key.clone(), failed: f.failed.clone() };
    facekit_io::durable::write(dir.join(FEATURES_JSON), &serde_json::to_vec_pretty(&file)?)?;
    Ok(())
}
