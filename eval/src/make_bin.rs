//! What goes into a verification `.bin` made from a pairs list (`facekit eval make-bin`): the
//! pairs whose two faces have an image, kept with the pairs file's folds ([`pairs::keep_folds`]).
//! The images come from elsewhere: a dataset's records, or chips cut from photos by
//! `facekit_pack::chips`; for photos, [`PhotoPlan`] says which files to cut and which are
//! missing, and [`PhotoPlan::bin`] keeps the pairs whose photos gave a chip.

use crate::pairs::{self, FaceRef, KeptFolds, MissingPolicy, PairList, Resolved};
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

/// The images and flags of a `.bin`, and what was left out for lack of an image.
#[derive(Debug, Clone)]
pub struct BinPairs {
    /// Two images per pair, in pair order.
    pub images: Vec<Vec<u8>>,
    /// Same-person flag of each pair.
    pub issame: Vec<bool>,
    /// What each fold of the pairs file kept.
    pub folds: KeptFolds,
    /// Pairs left out because a face of theirs has no image.
    pub unusable: usize,
}

/// The `.bin`'s images and flags: the pairs that `usable` allows (one flag per resolved pair),
/// kept with the pairs file's folds; `image(k)` is the image of face `k` of `index`.
pub fn assemble<'c>(
    list: &PairList,
    resolved: &Resolved,
    index: &[(usize, usize, bool)],
    usable: &[bool],
    image: impl Fn(usize) -> &'c Vec<u8>,
) -> Result<BinPairs> {
    let mut flags = vec![false; list.pairs.len()];
    let mut at = vec![None; list.pairs.len()];
    for (k, &i) in resolved.indices.iter().enumerate() {
        flags[i] = usable[k];
        at[i] = Some(k);
    }
    let folds = pairs::keep_folds(list, &flags);
    let (mut images, mut issame) = (Vec::with_capacity(2 * folds.kept.len()), Vec::with_capacity(folds.kept.len()));
    for &i in &folds.kept {
        let (l, r, same) = index[at[i].expect("kept pairs were resolved")];
        images.extend([image(l).clone(), image(r).clone()]);
        issame.push(same);
    }
    if issame.is_empty() {
        bail!("no pair is left to store");
    }
    Ok(BinPairs { images, issame, folds, unusable: usable.iter().filter(|&&ok| !ok).count() })
}

/// A photo the pairs file names that is not under the image root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingPhoto {
    /// Where it was looked for.
    pub path: PathBuf,
    /// `missing_person` (no folder of that person) or `missing_photo`.
    pub reason: &'static str,
    /// Which line named it.
    pub detail: String,
}

/// A pairs list resolved against a folder of photos in LFW layout (`root/Name/Name_0001.jpg`).
#[derive(Debug, Clone)]
pub struct PhotoPlan {
    /// The pairs whose photos exist (under `MissingPolicy::Skip`), and what is missing.
    pub resolved: Resolved,
    /// Each resolved pair as indices into `files`, with its same-person flag.
    pub index: Vec<(usize, usize, bool)>,
    /// The distinct photos of the resolved pairs, in order of first appearance: each is cut once.
    pub files: Vec<PathBuf>,
}

impl PhotoPlan {
    /// Resolves `list` against `root`; under `MissingPolicy::Error` a missing photo is an error.
    pub fn new(list: &PairList, root: &Path, policy: MissingPolicy) -> Result<Self> {
        let resolved = pairs::resolve(list, policy, |f| pairs::presence_in_folder(root, f))?;
        let (faces, index) = pairs::unique_faces(&resolved.pairs);
        let files = faces.iter().map(|f: &FaceRef| f.path(root)).collect();
        Ok(PhotoPlan { resolved, index, files })
    }

    /// Every photo the pairs file names that is not there, in the file's order.
    pub fn missing(&self, root: &Path) -> Vec<MissingPhoto> {
        self.resolved
            .missing
            .iter()
            .map(|m| MissingPhoto {
                path: m.face.path(root),
                reason: if m.person_missing { "missing_person" } else { "missing_photo" },
                detail: format!("named by line {} of the pairs file", m.line),
            })
            .collect()
    }

    /// The `.bin`'s pairs from the chip of each of [`PhotoPlan::files`] (`None`: it gave none).
    /// Under `MissingPolicy::Error` a pair without a chip is an error that points at the
    /// rejects list `listed_in`; otherwise such pairs are left out, the folds kept.
    pub fn bin(
        &self,
        list: &PairList,
        chips: &[Option<&Vec<u8>>],
        policy: MissingPolicy,
        listed_in: &Path,
    ) -> Result<BinPairs> {
        let usable: Vec<bool> = self.index.iter().map(|&(l, r, _)| chips[l].is_some() && chips[r].is_some()).collect();
        let unusable = usable.iter().filter(|&&ok| !ok).count();
        if unusable > 0 && policy == MissingPolicy::Error {
            let without = chips.iter().filter(|c| c.is_none()).count();
            bail!(
                "{without} photo(s) gave no chip (listed in {}), so {unusable} pair(s) cannot be stored; \
                 without --missing error they are left out",
                listed_in.display()
            );
        }
        assemble(list, &self.resolved, &self.index, &usable, |k| chips[k].expect("usable pairs have chips"))
    }
}
