//! The verification protocols run with a network: LFW-style pairs (from an image folder or a
//! packed dataset) and insightface `.bin` files, each scored by [`metrics::kfold_verification`].

use super::embed::{self, EmbedModel};
use super::faces::{self, PrepStats, Preparation};
use crate::events::Observer;
use crate::model::FaceNet;
use crate::trainer::numerics::Numerics;
use anyhow::{bail, Context, Result};
use facekit_eval::metrics::{self, KFoldReport};
use facekit_eval::pairs::{self, unique_faces, MissingPolicy, PairList, RecordFaces};
use facekit_eval::pickle::VerificationBin;
use rayon::prelude::*;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The outcome of a pairs protocol.
#[derive(Debug, Clone, Serialize)]
pub struct PairsReport {
    /// What was evaluated (pairs file, `.bin` file).
    pub source: String,
    /// Pairs listed.
    pub pairs_listed: usize,
    /// Pairs scored.
    pub pairs_used: usize,
    /// Pairs left out because a person has no folder (or no record) at all.
    pub missing_people: usize,
    /// Pairs left out because a photo is missing.
    pub missing_images: usize,
    /// Examples of what was missing.
    pub missing_examples: Vec<String>,
    /// Distinct images embedded.
    pub images: usize,
    /// How the images were prepared (alignment and centre-crop fallbacks).
    pub preparation: PrepStats,
    /// Whether the flip test was used.
    pub flip: bool,
    /// The k-fold figures.
    pub kfold: KFoldReport,
}

/// Squared L2 distances of the pairs `(a, b)` of rows of `emb` (`dim` columns).
pub fn pair_distances(emb: &[f32], dim: usize, pairs: &[(usize, usize)]) -> Vec<f64> {
    pairs
        .iter()
        .map(|&(a, b)| metrics::squared_l2(&emb[a * dim..(a + 1) * dim], &emb[b * dim..(b + 1) * dim]))
        .collect()
}

/// Options shared by the pairs protocols.
#[derive(Debug, Clone, Copy)]
pub struct PairsOptions {
    /// Number of folds (10 for LFW).
    pub folds: usize,
    /// Flip test.
    pub flip: bool,
    /// Batch size.
    pub batch_size: usize,
    /// Missing images or people.
    pub missing: MissingPolicy,
}

/// LFW protocol from a pairs file and an image root in LFW layout; `events` hears how far the
/// preparing and embedding are.
pub fn pairs_from_folder(
    model: &EmbedModel,
    list_path: &Path,
    root: &Path,
    prep: &Preparation,
    opts: PairsOptions,
    events: &Observer,
) -> Result<PairsReport> {
    if !root.is_dir() {
        bail!("image root {} is not a folder", root.display());
    }
    let list = PairList::read(list_path)?;
    let resolved = pairs::resolve(&list, opts.missing, |f| pairs::presence_in_folder(root, f))
        .with_context(|| format!("pairs file {} against {}", list_path.display(), root.display()))?;
    let (faces, index) = unique_faces(&resolved.pairs);
    let paths: Vec<_> = faces.iter().map(|f| f.path(root)).collect();
    let (chips, _, stats) = faces::prepare_files(&paths, model.image_size(), prep, events)?;
    let emb = embed::embed_images(model, &chips, opts.batch_size, opts.flip, events)
        .with_context(|| format!("images under {}", root.display()))?;
    finish(model, list_path.display().to_string(), &list, resolved, faces.len(), stats, &emb, &index, opts)
}

/// LFW protocol from a pairs file and a packed dataset whose records keep their original paths
/// (`Name/Name_0001.jpg`, possibly below a source folder); `events` hears how far the embedding is.
pub fn pairs_from_dataset(
    model: &EmbedModel,
    list_path: &Path,
    ds: &facekit_shard::Dataset,
    opts: PairsOptions,
    events: &Observer,
) -> Result<PairsReport> {
    let list = PairList::read(list_path)?;
    let found = record_faces(ds)?;
    let resolved = pairs::resolve(&list, opts.missing, |f| found.presence(f))
        .with_context(|| format!("pairs file {} against dataset {}", list_path.display(), ds.paths().name()))?;
    let (faces, index) = unique_faces(&resolved.pairs);
    let records: Vec<usize> =
        faces.iter().map(|f| found.record(f).expect("resolved faces are in the dataset")).collect();
    let size = model.image_size();
    let emb = embed::embed_all(model, records.len(), opts.batch_size, opts.flip, events, |k, buf| {
        let rec = ds.record(records[k])?;
        facekit_data::RecordDecoder::new()
            .decode_into(&rec, size, &facekit_data::View::IDENTITY, buf)
            .with_context(|| format!("record {}", records[k]))
    })
    .with_context(|| format!("dataset {}", ds.paths().name()))?;
    let stats = PrepStats::default();
    finish(model, list_path.display().to_string(), &list, resolved, faces.len(), stats, &emb, &index, opts)
}

/// insightface's protocol on a verification `.bin` file (pre-aligned images, pairs consecutive).
pub fn pairs_from_bin(model: &EmbedModel, bin_path: &Path, opts: PairsOptions) -> Result<PairsReport> {
    let set = BinSet::load(bin_path, model.image_size())?;
    let kfold = set
        .score(&model.net, &model.numerics(), opts.batch_size, opts.flip, opts.folds, &facekit_io::StopFlag::new())
        .with_context(|| format!("network {}", model.weights.display()))?;
    Ok(PairsReport {
        source: bin_path.display().to_string(),
        pairs_listed: set.pairs(),
        pairs_used: set.pairs(),
        missing_people: 0,
        missing_images: 0,
        missing_examples: Vec::new(),
        images: set.images(),
        preparation: PrepStats::default(),
        flip: opts.flip,
        kfold,
    })
}

/// The name of a verification set: its file stem (`lfw` for `data/lfw.bin`).
pub fn bin_name(path: &Path) -> String {
    path.file_stem().map_or_else(|| path.display().to_string(), |s| s.to_string_lossy().into_owned())
}

/// An insightface verification `.bin` file decoded once and prepared for a network's input side:
/// what `eval verify --bin` scores, and what the trainer's `--eval-bin` keeps in memory for the
/// whole run (`images x size x size x 3` bytes: 450 MB for LFW's 12,000 images at 112, 1.8 GB
/// at 224) and scores every `--eval-every` steps without decoding again.
pub struct BinSet {
    /// The file.
    pub path: PathBuf,
    /// Its name in logs and for `--best-on`: the file stem (`lfw`, `cfp_fp`).
    pub name: String,
    /// Side of the chips, the network's input size.
    pub size: u32,
    /// Every image as RGB8 HWC of `size` x `size`, one after the other; pair `k` is images `2k`
    /// and `2k + 1`.
    pub pixels: Vec<u8>,
    /// For each pair, whether both images show the same person.
    pub issame: Vec<bool>,
}

impl BinSet {
    /// Reads `path` (the hardened pickle reader), decodes every image and resizes it to `size` x
    /// `size` as `faces::resize` does (a copy when it already has that size), in parallel. An
    /// unreadable, malformed or undecodable file is an error naming it (and the image), and so is
    /// one whose decoded images would not fit the memory ([`check_decoded_memory`]).
    pub fn load(path: &Path, size: u32) -> Result<Self> {
        let bin = VerificationBin::read(path)?;
        let per = size as usize * size as usize * 3;
        check_decoded_memory(path, bin.images.len(), size, facekit_io::memory::available())?;
        let mut pixels = vec![0u8; bin.images.len() * per];
        pixels.par_chunks_mut(per).zip(&bin.images).enumerate().try_for_each(|(i, (buf, bytes))| -> Result<()> {
            let img = facekit_pack::photo::decode_image(bytes)
                .with_context(|| format!("{}: image {i} cannot be decoded", path.display()))?;
            buf.copy_from_slice(faces::resize(&img, size).as_raw());
            Ok(())
        })?;
        Ok(BinSet { path: path.to_path_buf(), name: bin_name(path), size, pixels, issame: bin.issame })
    }

    /// Number of images (twice the pairs).
    pub fn images(&self) -> usize {
        2 * self.issame.len()
    }

    /// Number of pairs.
    pub fn pairs(&self) -> usize {
        self.issame.len()
    }

    /// insightface's k-fold verification of `net` on these pairs: embeddings by
    /// [`embed::embed_chips`] (`batch_size` per pass, flip test with `flip`, ending early with
    /// [`embed::EmbedError::Stopped`] once `stop` is set), squared L2 distances, thresholds
    /// `0..4` by 0.01, `folds` consecutive folds. Embeddings that are not finite are an error
    /// naming this file ([`embed::EmbedError::NonFinite`] inside).
    pub fn score(
        &self,
        net: &FaceNet,
        numerics: &Numerics,
        batch_size: usize,
        flip: bool,
        folds: usize,
        stop: &facekit_io::StopFlag,
    ) -> Result<KFoldReport> {
        let emb = embed::embed_chips(net, numerics, &self.pixels, self.size, batch_size, flip, stop)
            .with_context(|| format!("verification on {}", self.path.display()))?;
        let pairs: Vec<(usize, usize)> = (0..self.pairs()).map(|k| (2 * k, 2 * k + 1)).collect();
        let dist = pair_distances(&emb, net.config().embedding_size as usize, &pairs);
        metrics::kfold_verification(&dist, &self.issame, &metrics::insightface_thresholds(), folds)
            .with_context(|| format!("verification on {}", self.path.display()))
    }
}

/// Refuses a `.bin` whose images, decoded at `size`, would take more than half the memory
/// `available` (unknown: no check): the count of images is the file's to choose, and 700,000
/// one-pixel PNGs fit a 50 MB file but not 26 GiB of 112x112 chips.
pub fn check_decoded_memory(path: &Path, images: usize, size: u32, available: Option<u64>) -> Result<()> {
    let needed = (images as u64).saturating_mul(u64::from(size) * u64::from(size) * 3);
    match available {
        Some(avail) if needed > avail / 2 => bail!(
            "{}: its {images} images decoded at {size}x{size} would take {}, more than half of the {} of memory available; \
             evaluate a smaller set, or at a smaller --image-size",
            path.display(),
            facekit_io::memory::gib(needed),
            facekit_io::memory::gib(avail)
        ),
        _ => Ok(()),
    }
}

/// The faces of `ds` by the paths its records keep ([`RecordFaces`]), for pairs files.
pub fn record_faces(ds: &facekit_shard::Dataset) -> Result<RecordFaces> {
    let views = (0..ds.len()).map(|i| ds.record(i)).collect::<Result<Vec<_>, _>>()?;
    Ok(RecordFaces::new(views.iter().enumerate().map(|(i, v)| (i, v.path))))
}

#[allow(clippy::too_many_arguments)]
fn finish(
    model: &EmbedModel,
    source: String,
    list: &PairList,
    resolved: pairs::Resolved,
    images: usize,
    preparation: PrepStats,
    emb: &[f32],
    index: &[(usize, usize, bool)],
    opts: PairsOptions,
) -> Result<PairsReport> {
    let pairs: Vec<(usize, usize)> = index.iter().map(|&(a, b, _)| (a, b)).collect();
    let same: Vec<bool> = index.iter().map(|&(_, _, s)| s).collect();
    let dist = pair_distances(emb, model.dim(), &pairs);
    let kfold = metrics::kfold_verification(&dist, &same, &metrics::insightface_thresholds(), opts.folds)?;
    Ok(PairsReport {
        source,
        pairs_listed: list.pairs.len(),
        pairs_used: pairs.len(),
        missing_people: resolved.missing_people,
        missing_images: resolved.missing_images,
        missing_examples: resolved.examples,
        images,
        preparation,
        flip: opts.flip,
        kfold,
    })
}
