//! LFW `pairs.txt` lists and their resolution against an image root in LFW layout.
//!
//! The official format: a header `folds n` (or a single `n` for `pairsDevTrain.txt`-style lists,
//! one fold), then per fold `n` same-person lines `name i j` followed by `n` different-person
//! lines `name1 i name2 j`. Image `i` of `name` is `root/name/name_000i.jpg`.

use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// One face named by a pairs file: a person and the 1-based number of their photo.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct FaceRef {
    /// Person name, the folder name in LFW layout (`Abel_Pacheco`).
    pub name: String,
    /// 1-based photo number.
    pub number: u32,
}

impl FaceRef {
    /// The LFW path of this face under `root`: `root/Name/Name_0001.jpg`.
    pub fn path(&self, root: &Path) -> PathBuf {
        root.join(&self.name).join(format!("{}_{:04}.jpg", self.name, self.number))
    }

    /// The same path relative to the root, as packed records store it (`Name/Name_0001.jpg`).
    pub fn relative(&self) -> String {
        format!("{}/{}_{:04}.jpg", self.name, self.name, self.number)
    }
}

/// One pair of faces and whether they show the same person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pair {
    /// First face.
    pub left: FaceRef,
    /// Second face.
    pub right: FaceRef,
    /// True for a same-person pair.
    pub same: bool,
    /// 1-based line number in the pairs file, for error messages.
    pub line: usize,
    /// 0-based fold of the pairs file it belongs to (the header's folds, consecutive).
    pub fold: usize,
}

/// A parsed pairs file.
#[derive(Debug, Clone, Serialize)]
pub struct PairList {
    /// Number of folds in the header.
    pub folds: usize,
    /// Same-person (and different-person) pairs per fold in the header.
    pub per_fold: usize,
    /// The pairs in file order (fold by fold).
    pub pairs: Vec<Pair>,
}

impl PairList {
    /// Reads and parses a pairs file.
    pub fn read(path: &Path) -> Result<Self> {
        let text =
            facekit_io::bounded::read_string(path, facekit_io::bounded::PAIRS).context("cannot read the pairs file")?;
        Self::parse(&text).with_context(|| format!("pairs file {} is malformed", path.display()))
    }

    /// Parses the text of a pairs file; errors name the line.
    pub fn parse(text: &str) -> Result<Self> {
        let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
        let Some((_, header)) = lines.next() else { bail!("the file is empty") };
        let nums: Vec<&str> = header.split_whitespace().collect();
        let parse_num =
            |s: &str| s.parse::<usize>().with_context(|| format!("line 1: header {header:?} is not `folds n`"));
        let (folds, per_fold) = match nums.as_slice() {
            [n] => (1, parse_num(n)?),
            [f, n] => (parse_num(f)?, parse_num(n)?),
            _ => bail!("line 1: header {header:?} is not `folds n`"),
        };
        // The header only promises: the lines decide what is kept, and their count bounds it.
        let promised = folds
            .checked_mul(per_fold)
            .and_then(|n| n.checked_mul(2))
            .filter(|&n| n <= text.len())
            .with_context(|| format!("line 1: header {header:?} promises more pairs than the file could hold"))?;
        let mut pairs = Vec::with_capacity(promised);
        for (i, line) in lines {
            let line_no = i + 1;
            let fold = pairs.len() / (2 * per_fold).max(1);
            let f: Vec<&str> = line.split_whitespace().collect();
            let num = |s: &str| {
                s.parse::<u32>()
                    .ok()
                    .filter(|&n| n > 0)
                    .with_context(|| format!("line {line_no}: {s:?} is not a photo number (1, 2, ...)"))
            };
            let names: &[&str] = match f.as_slice() {
                [name, _, _] => &[name],
                [n1, _, n2, _] => &[n1, n2],
                _ => &[],
            };
            if let Some(bad) = names.iter().find(|n| !is_person_name(n)) {
                bail!("line {line_no}: {bad:?} is not a person's folder name (no '/', not '.' or '..')");
            }
            let pair = match f.as_slice() {
                [name, a, b] => Pair {
                    left: FaceRef { name: name.to_string(), number: num(a)? },
                    right: FaceRef { name: name.to_string(), number: num(b)? },
                    same: true,
                    line: line_no,
                    fold,
                },
                [n1, a, n2, b] => Pair {
                    left: FaceRef { name: n1.to_string(), number: num(a)? },
                    right: FaceRef { name: n2.to_string(), number: num(b)? },
                    same: n1 == n2,
                    line: line_no,
                    fold,
                },
                _ => bail!("line {line_no}: {line:?} is neither `name i j` nor `name1 i name2 j`"),
            };
            if pair.left == pair.right {
                // Its distance is 0 whatever the network: scoring it would only flatter.
                bail!(
                    "line {line_no}: {line:?} pairs photo {} of {} with itself; a pair needs two photos",
                    pair.left.number,
                    pair.left.name
                );
            }
            pairs.push(pair);
        }
        if pairs.len() != promised {
            bail!(
                "the header promises {folds} fold(s) of {per_fold} same and {per_fold} different pairs ({promised} lines), the file has {}",
                pairs.len()
            );
        }
        Ok(PairList { folds, per_fold, pairs })
    }
}

/// A person name must be one folder of the image root: a pairs file cannot point outside it.
fn is_person_name(name: &str) -> bool {
    facekit_io::bounded::is_plain_name(name)
}

/// What to do with pairs whose images or people are missing from the image root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum MissingPolicy {
    /// Stop with an error listing what is missing.
    Error,
    /// Leave such pairs out, counted and listed (`make-bin` keeps the pairs file's folds, equal; `verify` keeps them as they are left).
    Skip,
}

/// The pairs whose both images exist, and a count of those that do not.
#[derive(Debug, Clone, Serialize)]
pub struct Resolved {
    /// Pairs kept, in file order.
    pub pairs: Vec<Pair>,
    /// The position in the list of each kept pair.
    pub indices: Vec<usize>,
    /// Every face found missing, with the pair's line.
    pub missing: Vec<MissingFace>,
    /// Pairs naming a person with no folder under the root.
    pub missing_people: usize,
    /// Pairs whose person exists but whose photo number does not.
    pub missing_images: usize,
    /// Up to 10 examples of what is missing, for the report.
    pub examples: Vec<String>,
}

/// A face a pairs file names that the images do not have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MissingFace {
    /// The pair's line in the pairs file.
    pub line: usize,
    /// The face.
    pub face: FaceRef,
    /// Whether the person or only the photo is missing.
    pub person_missing: bool,
}

impl Resolved {
    /// Nothing resolved: no pair kept, none missing.
    pub fn empty() -> Self {
        Resolved {
            pairs: Vec::new(),
            indices: Vec::new(),
            missing: Vec::new(),
            missing_people: 0,
            missing_images: 0,
            examples: Vec::new(),
        }
    }

    /// Pairs left out.
    pub fn skipped(&self) -> usize {
        self.missing_people + self.missing_images
    }
}

/// Checks every pair's images under `root` (via `exists`, so that packed datasets can answer
/// from their record paths) and applies `policy`.
pub fn resolve(list: &PairList, policy: MissingPolicy, exists: impl Fn(&FaceRef) -> Presence) -> Result<Resolved> {
    let mut out = Resolved::empty();
    for (i, pair) in list.pairs.iter().enumerate() {
        let found = [exists(&pair.left), exists(&pair.right)];
        for (presence, face) in found.into_iter().zip([&pair.left, &pair.right]) {
            if presence != Presence::Found {
                out.missing.push(MissingFace {
                    line: pair.line,
                    face: face.clone(),
                    person_missing: presence == Presence::NoPerson,
                });
            }
        }
        let worst = found
            .into_iter()
            .zip([&pair.left, &pair.right])
            .filter(|(p, _)| *p != Presence::Found)
            .min_by_key(|(p, _)| *p);
        match worst {
            None => {
                out.pairs.push(pair.clone());
                out.indices.push(i);
            }
            Some((presence, face)) => {
                if presence == Presence::NoPerson {
                    out.missing_people += 1;
                } else {
                    out.missing_images += 1;
                }
                if out.examples.len() < 10 {
                    let what = if presence == Presence::NoPerson { "no such person" } else { "no such photo" };
                    out.examples.push(format!("line {}: {} ({what})", pair.line, face.relative()));
                }
            }
        }
    }
    if policy == MissingPolicy::Error && out.skipped() > 0 {
        bail!(
            "{} pair(s) name people missing from the images and {} name missing photos, e.g. {}; \
             pass --missing skip to leave them out",
            out.missing_people,
            out.missing_images,
            out.examples.join("; ")
        );
    }
    Ok(out)
}

/// Whether a named face is available.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Presence {
    /// The person is unknown.
    NoPerson,
    /// The person is known but not this photo.
    NoImage,
    /// The photo is there.
    Found,
}

/// Looks a face up in an LFW-layout folder.
pub fn presence_in_folder(root: &Path, face: &FaceRef) -> Presence {
    if face.path(root).is_file() {
        Presence::Found
    } else if root.join(&face.name).is_dir() {
        Presence::NoImage
    } else {
        Presence::NoPerson
    }
}

/// The faces of a packed dataset, found by the paths its records keep: a record packed from
/// `root/Name/Name_0001.jpg` (or `root/source/Name/Name_0001.jpg`) answers for `Name 1`. What
/// `eval verify --dataset --pairs` and `eval make-bin --dataset` look pairs up in.
#[derive(Debug, Clone, Default)]
pub struct RecordFaces {
    by_path: HashMap<String, usize>,
    people: HashSet<String>,
}

impl RecordFaces {
    /// Indexes records given as `(record number, recorded path)`. Only the last two components
    /// of a path count (`Name/Name_0001.jpg`, whatever the source prefix); a backslash reads as `/`.
    /// When two records give the same name, the later one answers.
    pub fn new<'a>(records: impl IntoIterator<Item = (usize, &'a [u8])>) -> Self {
        let mut out = RecordFaces::default();
        for (i, path) in records {
            let path = String::from_utf8_lossy(path).replace('\\', "/");
            let parts: Vec<&str> = path.rsplitn(3, '/').collect();
            if parts.len() >= 2 {
                out.people.insert(parts[1].to_string());
                out.by_path.insert(format!("{}/{}", parts[1], parts[0]), i);
            }
        }
        out
    }

    /// The record of `face`, if the dataset has it.
    pub fn record(&self, face: &FaceRef) -> Option<usize> {
        self.by_path.get(&face.relative()).copied()
    }

    /// Whether `face` (or at least its person) is in the dataset, for [`resolve`].
    pub fn presence(&self, face: &FaceRef) -> Presence {
        if self.by_path.contains_key(&face.relative()) {
            Presence::Found
        } else if self.people.contains(&face.name) {
            Presence::NoImage
        } else {
            Presence::NoPerson
        }
    }
}

/// What [`keep_folds`] kept of each fold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FoldCount {
    /// Pairs the file lists in this fold.
    pub listed: usize,
    /// Pairs of this fold that cannot be used (a photo missing, or no face in it).
    pub unusable: usize,
    /// Usable pairs left out so that this fold keeps as many pairs as the others.
    pub balanced: usize,
}

impl FoldCount {
    /// Pairs kept.
    pub fn kept(&self) -> usize {
        self.listed - self.unusable - self.balanced
    }
}

/// The pairs of a list kept with its folds intact ([`keep_folds`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct KeptFolds {
    /// Positions in the list of the pairs kept, in file order.
    pub kept: Vec<usize>,
    /// For each fold of the file, in order.
    pub folds: Vec<FoldCount>,
}

impl KeptFolds {
    /// Usable pairs left out to keep the folds equal.
    pub fn balanced(&self) -> usize {
        self.folds.iter().map(|f| f.balanced).sum()
    }

    /// One line per fold that lost pairs: `fold 3: 1 unusable, 0 to balance, 599 kept`.
    pub fn describe(&self) -> Vec<String> {
        self.folds
            .iter()
            .enumerate()
            .filter(|(_, f)| f.unusable + f.balanced > 0)
            .map(|(k, f)| {
                format!(
                    "fold {}: {} of {} left out ({} unusable, {} to keep the folds equal), {} kept",
                    k + 1,
                    f.unusable + f.balanced,
                    f.listed,
                    f.unusable,
                    f.balanced,
                    f.kept()
                )
            })
            .collect()
    }
}

/// Keeps the `usable` pairs of `list` (one flag per listed pair) so that the folds of what is
/// kept are still the list's folds, for any reader that cuts pairs into equal consecutive folds
/// (insightface's `verification.py`, scikit-learn's `KFold`, `facekit eval verify --bin`): a
/// `.bin` holds pairs and flags, no fold boundaries, so dropping one pair would move every
/// boundary after it. Every fold gives up as many same-person pairs, and as many
/// different-person pairs, as the fold that lost most of them (its last usable ones of that
/// kind), so folds that held the same mix (LFW's: 300 of each) stay equal and keep it. Nothing
/// is dropped when all are usable.
pub fn keep_folds(list: &PairList, usable: &[bool]) -> KeptFolds {
    assert_eq!(usable.len(), list.pairs.len(), "one flag per listed pair");
    let folds = list.pairs.iter().map(|p| p.fold + 1).max().unwrap_or(0);
    // (fold, same) -> listed, unusable
    let mut listed = vec![[0usize; 2]; folds];
    let mut lost = vec![[0usize; 2]; folds];
    for (p, &ok) in list.pairs.iter().zip(usable) {
        listed[p.fold][usize::from(p.same)] += 1;
        lost[p.fold][usize::from(p.same)] += usize::from(!ok);
    }
    let worst: [usize; 2] = std::array::from_fn(|k| lost.iter().map(|l| l[k]).max().unwrap_or(0));
    let mut room: Vec<[usize; 2]> =
        listed.iter().map(|l| [l[0].saturating_sub(worst[0]), l[1].saturating_sub(worst[1])]).collect();
    let mut out = KeptFolds { kept: Vec::new(), folds: vec![FoldCount::default(); folds] };
    for (i, (p, &ok)) in list.pairs.iter().zip(usable).enumerate() {
        let f = &mut out.folds[p.fold];
        f.listed += 1;
        let left = &mut room[p.fold][usize::from(p.same)];
        match (ok, *left > 0) {
            (false, _) => f.unusable += 1,
            (true, true) => {
                *left -= 1;
                out.kept.push(i);
            }
            (true, false) => f.balanced += 1,
        }
    }
    out
}

/// The distinct faces of `pairs` in order of first appearance, and each pair as indices into
/// them with its same-person flag (each photo is prepared once however many pairs name it).
pub fn unique_faces(pairs: &[Pair]) -> (Vec<FaceRef>, Vec<(usize, usize, bool)>) {
    let mut faces = Vec::new();
    let mut seen: HashMap<FaceRef, usize> = HashMap::new();
    let mut id = |f: &FaceRef| {
        *seen.entry(f.clone()).or_insert_with(|| {
            faces.push(f.clone());
            faces.len() - 1
        })
    };
    let index = pairs.iter().map(|p| (id(&p.left), id(&p.right), p.same)).collect();
    (faces, index)
}
