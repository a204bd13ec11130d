//! The verification protocols run with a network: LFW-style pairs (from an image folder or a
//! packed dataset) and insightface `.bin` files, each scored by [`metrics::kfold_verification`].

use super::embed::{self, EmbedModel};
use super::faces::{self, PrepStats, Preparation};
use crate::embedding::bins::BinSet;
use crate::embedding::pair_distances;
use crate::events::Observer;
use anyhow::{bail, Context, Result};
use facekit_eval::metrics::{self, KFoldReport};
use facekit_eval::pairs::{self, unique_faces, MissingPolicy, PairList, RecordFaces};
use serde::Serialize;
use std::path::Path;

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
    let thresholds = metrics::insightface_thresholds();
    // The file's own folds when they are the ones asked for, so that pairs left out of one fold
    // move no other pair into another; any other count cuts what is left as KFold would.
    let kfold = if opts.folds == list.folds {
        let fold_of: Vec<usize> = resolved.pairs.iter().map(|p| p.fold).collect();
        metrics::kfold_verification_by_fold(&dist, &same, &thresholds, &fold_of)?
    } else {
        metrics::kfold_verification(&dist, &same, &thresholds, opts.folds)?
    };
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
