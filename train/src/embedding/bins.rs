//! insightface's verification `.bin` files decoded once for a network's input side ([`BinSet`])
//! and scored with it: by `eval verify --bin` on a loaded network, and every `--eval-every` steps
//! by the trainer on the network it trains.

use super::{embed_chips, pair_distances, resize};
use crate::model::FaceNet;
use crate::run::numerics::Numerics;
use anyhow::{bail, Context, Result};
use facekit_eval::metrics::{self, KFoldReport};
use facekit_eval::pickle::VerificationBin;
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// The name of a verification set: its file stem (`lfw` for `data/lfw.bin`).
pub(crate) fn bin_name(path: &Path) -> String {
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
    /// `size` as [`resize`] does (a copy when it already has that size), in parallel. An
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
            buf.copy_from_slice(resize(&img, size).as_raw());
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
    /// [`super::embed_chips`] (`batch_size` per pass, flip test with `flip`, ending early with
    /// [`super::EmbedError::Stopped`] once `stop` is set), squared L2 distances, thresholds
    /// `0..4` by 0.01, `folds` consecutive folds. Embeddings that are not finite are an error
    /// naming this file ([`super::EmbedError::NonFinite`] inside).
    pub fn score(
        &self,
        net: &FaceNet,
        numerics: &Numerics,
        batch_size: usize,
        flip: bool,
        folds: usize,
        stop: &facekit_io::StopFlag,
    ) -> Result<KFoldReport> {
        let emb = embed_chips(net, numerics, &self.pixels, self.size, batch_size, flip, stop)
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
