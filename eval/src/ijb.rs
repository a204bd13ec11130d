//! IJB-B and IJB-C template evaluation as insightface runs it (`recognition/arcface_torch/eval_ijbc.py`
//! for 1:1 verification, `recognition/_evaluation_/ijb/ijb_1n.py` for 1:N identification), without a
//! network: the meta files read ([`Meta::read`], [`read_pairs`], [`read_template_subjects`]), face
//! features pooled into template features ([`pool_templates`]), and the figures ([`verification`],
//! [`identification`]).
//!
//! A face's feature is its raw (not normalised) flip-summed embedding times the detector's
//! faceness score. Within a template the faces of one media are averaged, the media summed and the
//! sum L2-normalised; a pair's score is the dot product of its two templates' features.

use crate::metrics::{self, RocPoint};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// The two IJB sets: their meta files' prefixes and 1:N gallery names differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Target {
    /// IJB-B (`ijbb_*` meta files, galleries S1 and S2).
    #[cfg_attr(feature = "clap", value(name = "IJBB", alias = "ijbb"))]
    Ijbb,
    /// IJB-C (`ijbc_*` meta files, galleries G1 and G2).
    #[cfg_attr(feature = "clap", value(name = "IJBC", alias = "ijbc"))]
    Ijbc,
}

impl Target {
    /// Prefix of the meta files (`ijbb`, `ijbc`).
    pub fn prefix(&self) -> &'static str {
        match self {
            Target::Ijbb => "ijbb",
            Target::Ijbc => "ijbc",
        }
    }

    /// Names of the two 1:N galleries (`S1`, `S2` for IJB-B; `G1`, `G2` for IJB-C).
    pub fn galleries(&self) -> [&'static str; 2] {
        match self {
            Target::Ijbb => ["S1", "S2"],
            Target::Ijbc => ["G1", "G2"],
        }
    }
}

/// Where the files of an IJB set are below its root, as insightface lays them out.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The set's root (`IJBC/`).
    pub root: PathBuf,
    /// Which set.
    pub target: Target,
}

impl Layout {
    /// Folder of the loose face crops.
    pub fn images(&self) -> PathBuf {
        self.root.join("loose_crop")
    }

    fn meta(&self, suffix: &str) -> PathBuf {
        self.root.join("meta").join(format!("{}_{suffix}", self.target.prefix()))
    }

    /// `meta/<target>_name_5pts_score.txt`.
    pub fn landmarks(&self) -> PathBuf {
        self.meta("name_5pts_score.txt")
    }

    /// `meta/<target>_face_tid_mid.txt`.
    pub fn templates(&self) -> PathBuf {
        self.meta("face_tid_mid.txt")
    }

    /// `meta/<target>_template_pair_label.txt`.
    pub fn pairs(&self) -> PathBuf {
        self.meta("template_pair_label.txt")
    }

    /// The 1:N galleries, `(name, meta/<target>_1N_gallery_<name>.csv)`.
    pub fn galleries(&self) -> [(&'static str, PathBuf); 2] {
        self.target.galleries().map(|g| (g, self.meta(&format!("1N_gallery_{g}.csv"))))
    }

    /// `meta/<target>_1N_probe_mixed.csv`.
    pub fn probes(&self) -> PathBuf {
        self.meta("1N_probe_mixed.csv")
    }
}

/// One line of a meta file that could not be used, named by file and line (1-based).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineIssue {
    /// The file.
    pub file: String,
    /// Line number, from 1.
    pub line: usize,
    /// What is wrong with it.
    pub problem: String,
}

impl std::fmt::Display for LineIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} line {}: {}", self.file, self.line, self.problem)
    }
}

/// One face of the set: a line of the landmarks file and the same line of the templates file.
#[derive(Debug, Clone, PartialEq)]
pub struct Face {
    /// Image file name below `loose_crop/`.
    pub name: String,
    /// Five points in insightface's order (eye on the image's left, eye on its right, nose tip,
    /// mouth corners left and right), image pixels; `None` when its landmarks line is unusable.
    pub points: Option<[[f64; 2]; 5]>,
    /// The detector's faceness score (0 when the landmarks line is unusable).
    pub score: f32,
    /// Template and media ids; `None` when its templates line is unusable.
    pub template: Option<(u64, u64)>,
}

/// The faces of an IJB set, and every line that could not be used.
#[derive(Debug, Clone, Default)]
pub struct Meta {
    /// One per line of the landmarks file, in its order.
    pub faces: Vec<Face>,
    /// Unusable lines of either file.
    pub issues: Vec<LineIssue>,
    /// Lines whose two files name different images (insightface pairs the files by line, so these
    /// are paired by line here too; the count says whether the files belong together).
    pub name_mismatches: usize,
}

/// Lines of a text file, numbered from 1, blank ones left out. Read as a table
/// ([`facekit_io::bounded::TABLE`]): a FIFO or device named as a meta file is refused, not read
/// until it ends (IJB-C's pair list, the largest, is about 300 MB).
fn numbered_lines(path: &Path) -> Result<(String, Vec<(usize, String)>)> {
    let text = facekit_io::bounded::read_string(path, facekit_io::bounded::TABLE)?;
    let lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| (i + 1, l.trim().to_string()))
        .collect();
    Ok((path.display().to_string(), lines))
}

/// `name x1 y1 ... x5 y5 score`.
fn parse_landmarks(line: &str) -> std::result::Result<(String, [[f64; 2]; 5], f32), String> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() != 12 {
        return Err(format!("{} fields, expected 12 (name, 5 points, score)", f.len()));
    }
    let num = |s: &str| -> std::result::Result<f64, String> {
        match s.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(v),
            _ => Err(format!("`{s}` is not a finite number")),
        }
    };
    let mut points = [[0.0; 2]; 5];
    for (k, p) in points.iter_mut().enumerate() {
        *p = [num(f[1 + 2 * k])?, num(f[2 + 2 * k])?];
    }
    let score = num(f[11])? as f32;
    Ok((f[0].to_string(), points, score))
}

/// `name tid mid`.
fn parse_template_line(line: &str) -> std::result::Result<(String, u64, u64), String> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() != 3 {
        return Err(format!("{} fields, expected 3 (name, template id, media id)", f.len()));
    }
    let id = |s: &str| s.parse::<u64>().map_err(|_| format!("`{s}` is not a whole number"));
    Ok((f[0].to_string(), id(f[1])?, id(f[2])?))
}

impl Meta {
    /// Reads the landmarks file and the templates file, paired line by line as insightface pairs
    /// them. Files of different lengths are an error (no pairing by line could be right); an
    /// unusable line is recorded in [`Meta::issues`] and leaves its face without landmarks or
    /// without a template.
    pub fn read(landmarks: &Path, templates: &Path) -> Result<Meta> {
        let (lf, lm) = numbered_lines(landmarks)?;
        let (tf, tm) = numbered_lines(templates)?;
        if lm.len() != tm.len() {
            bail!(
                "{lf} has {} lines but {tf} has {}: insightface pairs them line by line, so they must have as many",
                lm.len(),
                tm.len()
            );
        }
        let mut meta = Meta::default();
        for ((ln, l), (tn, t)) in lm.iter().zip(&tm) {
            let mut face = Face { name: String::new(), points: None, score: 0.0, template: None };
            match parse_landmarks(l) {
                Ok((name, points, score)) => {
                    face.name = name;
                    face.points = Some(points);
                    face.score = score;
                }
                Err(problem) => {
                    face.name = l.split_whitespace().next().unwrap_or_default().to_string();
                    meta.issues.push(LineIssue { file: lf.clone(), line: *ln, problem });
                }
            }
            match parse_template_line(t) {
                Ok((name, tid, mid)) => {
                    if name != face.name {
                        meta.name_mismatches += 1;
                    }
                    face.template = Some((tid, mid));
                }
                Err(problem) => meta.issues.push(LineIssue { file: tf.clone(), line: *tn, problem }),
            }
            meta.faces.push(face);
        }
        Ok(meta)
    }
}

/// A 1:N template and its subject.
pub type TemplateSubject = (u64, u64);

/// A template pair of the 1:1 protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TemplatePair {
    /// First template.
    pub a: u64,
    /// Second template.
    pub b: u64,
    /// Same subject.
    pub genuine: bool,
}

/// Reads `t1 t2 label` lines (label 1 genuine, 0 impostor); unusable lines are returned as issues.
pub fn read_pairs(path: &Path) -> Result<(Vec<TemplatePair>, Vec<LineIssue>)> {
    let (file, lines) = numbered_lines(path)?;
    let (mut pairs, mut issues) = (Vec::new(), Vec::new());
    for (n, l) in lines {
        let f: Vec<&str> = l.split_whitespace().collect();
        let parsed = match f.as_slice() {
            [a, b, label] => match (a.parse::<u64>(), b.parse::<u64>(), *label) {
                (Ok(a), Ok(b), "0" | "1") => Ok(TemplatePair { a, b, genuine: *label == "1" }),
                (Ok(_), Ok(_), other) => Err(format!("label `{other}` is neither 0 nor 1")),
                _ => Err("template ids are not whole numbers".to_string()),
            },
            _ => Err(format!("{} fields, expected 3 (template, template, label)", f.len())),
        };
        match parsed {
            Ok(p) => pairs.push(p),
            Err(problem) => issues.push(LineIssue { file: file.clone(), line: n, problem }),
        }
    }
    Ok((pairs, issues))
}

/// Reads a 1:N gallery or probe CSV (a header, then `TEMPLATE_ID,SUBJECT_ID,...`, several rows per
/// template): each template once, in order of first appearance, with the subject of its first row
/// (as insightface's `np.unique(..., return_index=True)` takes it); unusable rows are returned as issues.
pub fn read_template_subjects(path: &Path) -> Result<(Vec<TemplateSubject>, Vec<LineIssue>)> {
    let (file, lines) = numbered_lines(path)?;
    let (mut out, mut issues, mut seen) = (Vec::new(), Vec::new(), HashMap::new());
    for (n, l) in lines.into_iter().skip(1) {
        let f: Vec<&str> = l.split(',').map(str::trim).collect();
        match (f.first().map(|s| s.parse::<u64>()), f.get(1).map(|s| s.parse::<u64>())) {
            (Some(Ok(t)), Some(Ok(s))) => {
                if let Some(&first) = seen.get(&t) {
                    if first != s {
                        issues.push(LineIssue {
                            file: file.clone(),
                            line: n,
                            problem: format!("template {t} was given subject {first} before, here {s}"),
                        });
                    }
                } else {
                    seen.insert(t, s);
                    out.push((t, s));
                }
            }
            _ => issues.push(LineIssue {
                file: file.clone(),
                line: n,
                problem: "the first two columns are not TEMPLATE_ID,SUBJECT_ID whole numbers".to_string(),
            }),
        }
    }
    Ok((out, issues))
}

/// Template features: each template id of the faces with its L2-normalised pooled feature.
#[derive(Debug, Clone)]
pub struct Templates {
    /// Feature length.
    pub dim: usize,
    /// Row of each template id in `features`.
    pub index: BTreeMap<u64, usize>,
    /// `templates * dim` values, f64 as numpy pools them.
    pub features: Vec<f64>,
    /// Templates without a single face with a feature: their feature is all zeros, so they score 0
    /// against everything (insightface's `sklearn.preprocessing.normalize` leaves a zero row zero).
    pub empty: Vec<u64>,
}

impl Templates {
    /// The feature of template `t`, `None` for an id no face names.
    pub fn feature(&self, t: u64) -> Option<&[f64]> {
        self.index.get(&t).map(|&r| &self.features[r * self.dim..(r + 1) * self.dim])
    }
}

/// Pools face features into template features. `features` holds each face's raw flip-summed
/// embedding (`faces * dim`), `None` for a face that has none (unreadable image, unusable
/// landmarks); each is weighted by its face's score, faces of one media of a template are averaged,
/// the media summed, the sum L2-normalised. Faces without a template are left out.
pub fn pool_templates(faces: &[Face], features: &[Option<&[f32]>], dim: usize) -> Result<Templates> {
    if faces.len() != features.len() {
        bail!("{} faces but {} features", faces.len(), features.len());
    }
    // Faces in (template, media) order, as numpy's np.unique orders them, so that one media's sum
    // and one template's feature are built at a time (IJB-C: 469,375 faces in 23,124 templates).
    let mut order: Vec<(u64, u64, usize)> =
        faces.iter().enumerate().filter_map(|(i, f)| f.template.map(|(t, m)| (t, m, i))).collect();
    order.sort_unstable();
    let templates: Vec<u64> = {
        let mut t: Vec<u64> = order.iter().map(|o| o.0).collect();
        t.dedup();
        t
    };
    let mut out =
        Templates { dim, index: BTreeMap::new(), features: vec![0.0; templates.len() * dim], empty: Vec::new() };
    let mut media = vec![0.0f64; dim];
    for (row, chunk) in order.chunk_by(|a, b| a.0 == b.0).enumerate() {
        let t = chunk[0].0;
        out.index.insert(t, row);
        let f = &mut out.features[row * dim..(row + 1) * dim];
        for faces_of_media in chunk.chunk_by(|a, b| a.1 == b.1) {
            media.fill(0.0);
            let mut count = 0usize;
            for &(_, _, i) in faces_of_media {
                let Some(feat) = features[i] else { continue };
                if feat.len() != dim {
                    bail!("face {}: feature of {} values, expected {dim}", faces[i].name, feat.len());
                }
                for (s, &v) in media.iter_mut().zip(feat) {
                    *s += f64::from(v * faces[i].score);
                }
                count += 1;
            }
            if count > 0 {
                for (o, s) in f.iter_mut().zip(&media) {
                    *o += s / count as f64;
                }
            }
        }
        let norm = f.iter().map(|v| v * v).sum::<f64>().sqrt();
        if norm > 0.0 {
            f.iter_mut().for_each(|v| *v /= norm);
        } else {
            out.empty.push(t);
        }
    }
    Ok(out)
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// TAR at one FAR target by insightface's rule.
#[derive(Debug, Clone, Serialize)]
pub struct NearestTar {
    /// The FAR target.
    pub far_target: f64,
    /// TPR of the ROC point (scikit-learn's `roc_curve`, intermediate points dropped) whose FPR is
    /// nearest the target, the first of equals (`np.argmin(abs(fpr - target))`).
    pub tar: f64,
    /// That point's FPR (it may exceed the target).
    pub far: f64,
    /// That point's threshold (accept `>= threshold`; +inf for the (0, 0) point).
    pub threshold: f64,
    /// Whether there are at least `1/far_target` impostor pairs, without which that FAR cannot be
    /// measured (insightface reports a figure anyway).
    pub measurable: bool,
}

/// The 1:1 verification figures.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    /// Pairs listed (usable lines).
    pub pairs_listed: usize,
    /// Pairs scored.
    pub pairs_scored: usize,
    /// Genuine and impostor pairs scored.
    pub genuine: usize,
    /// Impostor pairs scored.
    pub impostor: usize,
    /// Pairs naming a template that no face belongs to: left out.
    pub pairs_unknown_template: usize,
    /// Pairs scored whose template has no face feature (score 0, as insightface would give).
    pub pairs_empty_template: usize,
    /// TAR at FAR 1e-6 ... 1e-1 by insightface's rule (the headline figures).
    pub tar_at_far: Vec<NearestTar>,
    /// TAR at the same targets by facekit's rule elsewhere (`eval verify`): the best TAR whose FAR
    /// does not exceed the target.
    pub tar_at_far_within: Vec<metrics::TarAtFar>,
    /// Area under the ROC curve.
    pub auc: f64,
    /// The ROC as scikit-learn's `roc_curve` with `drop_intermediate=True` gives it.
    #[serde(skip)]
    pub roc: Vec<RocPoint>,
}

/// The FAR targets of insightface's IJB table, smallest first.
pub const IJB_FAR_TARGETS: [f64; 6] = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1];

/// Scores every pair whose templates exist; returns the scores (one per pair, NaN for pairs left
/// out) and the figures.
pub fn verification(templates: &Templates, pairs: &[TemplatePair]) -> Result<(Vec<f64>, Verification)> {
    let mut scores = Vec::with_capacity(pairs.len());
    let (mut kept_scores, mut kept_genuine) = (Vec::new(), Vec::new());
    let (mut unknown, mut empty) = (0, 0);
    let is_empty = |t: u64| templates.empty.binary_search(&t).is_ok();
    for p in pairs {
        match (templates.feature(p.a), templates.feature(p.b)) {
            (Some(a), Some(b)) => {
                let s = dot(a, b);
                if is_empty(p.a) || is_empty(p.b) {
                    empty += 1;
                }
                scores.push(s);
                kept_scores.push(s);
                kept_genuine.push(p.genuine);
            }
            _ => {
                unknown += 1;
                scores.push(f64::NAN);
            }
        }
    }
    let genuine = kept_genuine.iter().filter(|&&g| g).count();
    let impostor = kept_genuine.len() - genuine;
    let full = metrics::roc_curve(&kept_scores, &kept_genuine).context("the 1:1 pairs")?;
    let roc = metrics::drop_collinear(&full, genuine as u64, impostor as u64);
    let tar_at_far = nearest_tar(&roc, impostor as u64, &IJB_FAR_TARGETS);
    let tar_at_far_within = metrics::tar_at_far(&full, impostor as u64, &IJB_FAR_TARGETS);
    let report = Verification {
        pairs_listed: pairs.len(),
        pairs_scored: kept_scores.len(),
        genuine,
        impostor,
        pairs_unknown_template: unknown,
        pairs_empty_template: empty,
        tar_at_far,
        tar_at_far_within,
        auc: metrics::auc(&full),
        roc,
    };
    Ok((scores, report))
}

/// insightface's TAR at FAR: the ROC point whose FPR is nearest each target, the first of equals.
pub fn nearest_tar(roc: &[RocPoint], impostors: u64, targets: &[f64]) -> Vec<NearestTar> {
    targets
        .iter()
        .filter_map(|&target| {
            let mut best: Option<&RocPoint> = None;
            for p in roc {
                if best.is_none_or(|b| (p.far - target).abs() < (b.far - target).abs()) {
                    best = Some(p);
                }
            }
            best.map(|p| NearestTar {
                far_target: target,
                tar: p.tar,
                far: p.far,
                threshold: p.threshold,
                measurable: impostors as f64 >= (1.0 / target).round(),
            })
        })
        .collect()
}

/// A 1:N gallery: its name and its templates with their subjects.
#[derive(Debug, Clone)]
pub struct Gallery {
    /// `G1`, `G2` (IJB-C) or `S1`, `S2` (IJB-B).
    pub name: String,
    /// Templates and subjects.
    pub templates: Vec<(u64, u64)>,
}

/// One operating point of an identification figure.
#[derive(Debug, Clone, Serialize)]
pub struct TpirAt {
    /// The FAR (insightface) or FPIR (NIST) target.
    pub target: f64,
    /// Fraction of the (mated) probes found at that threshold.
    pub tpir: f64,
    /// The threshold: a probe counts when its score is strictly above it.
    pub threshold: f64,
    /// NIST: the FPIR actually achieved (at most the target); insightface's rule has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fpir: Option<f64>,
    /// Why the figure is absent or weak, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// insightface's closed-set figures over the two galleries together (`ijb_1n.py`).
#[derive(Debug, Clone, Serialize)]
pub struct ClosedSet {
    /// Gallery templates (both galleries).
    pub gallery_templates: usize,
    /// Probes scored (those whose subject has one gallery template).
    pub probes: usize,
    /// Probes left out: their subject has no gallery template (insightface stops on them).
    pub probes_without_mate: usize,
    /// Fraction of probes whose mate is first, in the first 5, in the first 10 (rank = 1 + gallery
    /// templates scoring strictly higher than the mate).
    pub top1: f64,
    /// Top 5.
    pub top5: f64,
    /// Top 10.
    pub top10: f64,
    /// "TPIR at FAR" 0.01 and 0.1 by insightface's rule: threshold = the `ceil(probes * far)`-th
    /// largest non-mate score of all probes, TPIR = fraction of probes whose mate scores above it.
    pub tpir_at_far: Vec<TpirAt>,
}

/// NIST's open-set figures against one gallery.
#[derive(Debug, Clone, Serialize)]
pub struct OpenSet {
    /// The gallery.
    pub gallery: String,
    /// Its templates.
    pub gallery_templates: usize,
    /// Probes whose subject is in the gallery (mated searches).
    pub mated: usize,
    /// The others (non-mated searches).
    pub non_mated: usize,
    /// Closed-set rank-1 and rank-5 identification rates of the mated searches.
    pub rank1: f64,
    /// Rank 5.
    pub rank5: f64,
    /// TPIR at FPIR 1e-2 and 1e-1: the lowest threshold at which at most that fraction of non-mated
    /// searches has a top score above it; TPIR = mated searches whose mate is first and above it.
    pub tpir_at_fpir: Vec<TpirAt>,
}

/// The 1:N figures.
#[derive(Debug, Clone, Serialize)]
pub struct Identification {
    /// Probe templates listed.
    pub probes: usize,
    /// Probe and gallery templates no face belongs to (their feature is zero).
    pub unknown_templates: usize,
    /// insightface's figures, both galleries together.
    pub insightface: ClosedSet,
    /// NIST's, per gallery.
    pub open_set: Vec<OpenSet>,
}

/// Scores of every probe against every gallery template (`probes * gallery` values).
fn similarity(templates: &Templates, probes: &[(u64, u64)], gallery: &[(u64, u64)]) -> Vec<f64> {
    use rayon::prelude::*;
    let zero = vec![0.0; templates.dim];
    let feat = |t: u64| templates.feature(t).unwrap_or(&zero);
    let g: Vec<&[f64]> = gallery.iter().map(|&(t, _)| feat(t)).collect();
    probes
        .par_iter()
        .flat_map_iter(|&(p, _)| {
            let f = feat(p);
            g.iter().map(move |x| dot(f, x)).collect::<Vec<_>>()
        })
        .collect()
}

/// The 1:N protocol: insightface's closed-set figures over both galleries, and NIST's open-set
/// figures per gallery.
pub fn identification(templates: &Templates, galleries: &[Gallery], probes: &[(u64, u64)]) -> Result<Identification> {
    let unknown = galleries
        .iter()
        .flat_map(|g| g.templates.iter())
        .chain(probes)
        .filter(|&&(t, _)| templates.feature(t).is_none())
        .count();
    let all: Vec<(u64, u64)> = galleries.iter().flat_map(|g| g.templates.iter().copied()).collect();
    let insightface = closed_set(templates, &all, probes)?;
    let open_set = galleries.iter().map(|g| open_set(templates, g, probes)).collect::<Result<Vec<_>>>()?;
    Ok(Identification { probes: probes.len(), unknown_templates: unknown, insightface, open_set })
}

/// Row of the mate of each probe in `gallery`, `None` for a probe whose subject is not there; a
/// subject with several gallery templates is an error (the protocol gives each one).
fn mates(gallery: &[(u64, u64)], probes: &[(u64, u64)]) -> Result<Vec<Option<usize>>> {
    let mut by_subject: HashMap<u64, usize> = HashMap::new();
    for (row, &(t, s)) in gallery.iter().enumerate() {
        if let Some(&other) = by_subject.get(&s) {
            bail!(
                "subject {s} has two gallery templates ({} and {t}); the protocol gives each subject one",
                gallery[other].0
            );
        }
        by_subject.insert(s, row);
    }
    Ok(probes.iter().map(|(_, s)| by_subject.get(s).copied()).collect())
}

fn rank_of(row: &[f64], mate: usize) -> usize {
    1 + row.iter().filter(|&&v| v > row[mate]).count()
}

/// The `k` largest values, largest first.
fn largest(values: impl Iterator<Item = f64>, k: usize) -> Vec<f64> {
    #[derive(PartialEq)]
    struct Score(f64);
    impl Eq for Score {}
    impl PartialOrd for Score {
        fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
            Some(self.cmp(other))
        }
    }
    impl Ord for Score {
        fn cmp(&self, other: &Self) -> std::cmp::Ordering {
            // Reversed: the heap's top is the smallest score kept.
            other.0.total_cmp(&self.0)
        }
    }
    let mut heap = std::collections::BinaryHeap::with_capacity(k + 1);
    for v in values {
        if heap.len() < k {
            heap.push(Score(v));
        } else if heap.peek().is_some_and(|low| v > low.0) {
            heap.pop();
            heap.push(Score(v));
        }
    }
    heap.into_sorted_vec().into_iter().map(|s| s.0).collect()
}

fn closed_set(templates: &Templates, gallery: &[(u64, u64)], probes: &[(u64, u64)]) -> Result<ClosedSet> {
    let mates = mates(gallery, probes)?;
    let kept: Vec<((u64, u64), usize)> = probes.iter().zip(&mates).filter_map(|(&p, m)| m.map(|m| (p, m))).collect();
    let probe_list: Vec<(u64, u64)> = kept.iter().map(|k| k.0).collect();
    let g = gallery.len();
    let sim = similarity(templates, &probe_list, gallery);
    let n = kept.len();
    let ranks: Vec<usize> = kept.iter().enumerate().map(|(i, &(_, m))| rank_of(&sim[i * g..(i + 1) * g], m)).collect();
    let top = |k: usize| ranks.iter().filter(|&&r| r <= k).count() as f64 / n.max(1) as f64;
    let pos: Vec<f64> = kept.iter().enumerate().map(|(i, &(_, m))| sim[i * g + m]).collect();
    // Only the largest ceil(n * 0.1) non-mate scores are ever read: keep those, not all n * (g - 1)
    // (69 million for IJB-C).
    let wanted = (n as f64 * 0.1).ceil() as usize;
    let non_mates = kept.iter().enumerate().flat_map(|(i, &(_, m))| {
        sim[i * g..(i + 1) * g].iter().enumerate().filter(move |&(j, _)| j != m).map(|(_, &v)| v)
    });
    let neg = largest(non_mates, wanted);
    let tpir_at_far = [0.01, 0.1]
        .iter()
        .map(|&far| {
            let k = (n as f64 * far).ceil() as usize;
            match neg.get(k.max(1) - 1) {
                Some(&th) => TpirAt {
                    target: far,
                    tpir: pos.iter().filter(|&&p| p > th).count() as f64 / n as f64,
                    threshold: th,
                    fpir: None,
                    note: None,
                },
                None => TpirAt {
                    target: far,
                    tpir: f64::NAN,
                    threshold: f64::NAN,
                    fpir: None,
                    note: Some(format!("needs {k} non-mate scores, there are {}", neg.len())),
                },
            }
        })
        .collect();
    Ok(ClosedSet {
        gallery_templates: g,
        probes: n,
        probes_without_mate: probes.len() - n,
        top1: top(1),
        top5: top(5),
        top10: top(10),
        tpir_at_far,
    })
}

fn open_set(templates: &Templates, gallery: &Gallery, probes: &[(u64, u64)]) -> Result<OpenSet> {
    let g = gallery.templates.len();
    let mates = mates(&gallery.templates, probes)?;
    let sim = similarity(templates, probes, &gallery.templates);
    let (mut rank1, mut rank5) = (0usize, 0usize);
    // Mated searches: (mate is first, mate's score); non-mated: their top score.
    let (mut mated, mut non_mated) = (Vec::new(), Vec::new());
    for (i, m) in mates.iter().enumerate() {
        let row = &sim[i * g..(i + 1) * g];
        match m {
            Some(m) => {
                let r = rank_of(row, *m);
                rank1 += usize::from(r == 1);
                rank5 += usize::from(r <= 5);
                mated.push((r == 1, row[*m]));
            }
            None => non_mated.push(row.iter().copied().fold(f64::NEG_INFINITY, f64::max)),
        }
    }
    non_mated.sort_unstable_by(|a, b| b.total_cmp(a));
    let nm = non_mated.len();
    let tpir_at_fpir = [1e-2, 1e-1]
        .iter()
        .map(|&fpir| {
            // At most k non-mated top scores may lie above the threshold: the (k+1)-th largest.
            let k = (fpir * nm as f64 + 1e-9).floor() as usize;
            let th = non_mated.get(k).copied().unwrap_or(f64::NEG_INFINITY);
            let above = non_mated.iter().filter(|&&s| s > th).count();
            let found = mated.iter().filter(|&&(first, s)| first && s > th).count();
            let note = (nm == 0 || (nm as f64) < (1.0 / fpir).round()).then(|| {
                format!("FPIR {fpir:e} needs at least {:.0} non-mated searches, there are {nm}", (1.0 / fpir).round())
            });
            TpirAt {
                target: fpir,
                tpir: found as f64 / mated.len().max(1) as f64,
                threshold: th,
                fpir: Some(above as f64 / nm.max(1) as f64),
                note,
            }
        })
        .collect();
    let m = mated.len().max(1) as f64;
    Ok(OpenSet {
        gallery: gallery.name.clone(),
        gallery_templates: g,
        mated: mated.len(),
        non_mated: nm,
        rank1: rank1 as f64 / m,
        rank5: rank5 as f64 / m,
        tpir_at_fpir,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn face(name: &str, score: f32, t: u64, m: u64) -> Face {
        Face { name: name.into(), points: Some([[0.0; 2]; 5]), score, template: Some((t, m)) }
    }

    #[test]
    fn a_fifo_or_device_named_as_a_meta_file_is_refused_not_read_forever() {
        let d = tempfile::tempdir().unwrap();
        let t = write(d.path(), "t.txt", "a.jpg 1 7\n");
        let fifo = d.path().join("ijbc_name_5pts_score.txt");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let err = format!("{:#}", Meta::read(&fifo, &t).unwrap_err());
        assert!(err.contains("a FIFO") && err.contains("ijbc_name_5pts_score.txt"), "{err}");
        let err = format!("{:#}", read_pairs(Path::new("/dev/zero")).unwrap_err());
        assert!(err.contains("character device"), "{err}");
    }

    #[test]
    fn bad_lines_are_named_and_leave_the_face_without_what_they_held() {
        let d = tempfile::tempdir().unwrap();
        let l = write(
            d.path(),
            "l.txt",
            "a.jpg 1 2 3 4 5 6 7 8 9 10 0.9\nb.jpg 1 2 3 x 5 6 7 8 9 10 0.9\n\nc.jpg 1 2\nd.jpg 1 2 3 4 5 6 7 8 9 10 1\n",
        );
        let t = write(d.path(), "t.txt", "a.jpg 1 7\nb.jpg 1 7\n\nc.jpg 2 8\nzz.jpg two 9\n");
        let m = Meta::read(&l, &t).unwrap();
        assert_eq!(m.faces.len(), 4);
        assert_eq!(m.faces[0].points.unwrap()[4], [9.0, 10.0]);
        assert_eq!(m.faces[0].score, 0.9);
        assert!(m.faces[1].points.is_none() && m.faces[1].template == Some((1, 7)));
        assert!(m.faces[2].points.is_none());
        assert!(m.faces[3].template.is_none() && m.faces[3].points.is_some());
        let lines: Vec<String> = m.issues.iter().map(|i| format!("{}:{}", i.file.ends_with("l.txt"), i.line)).collect();
        assert_eq!(lines, ["true:2", "true:4", "false:5"], "{:?}", m.issues);
        assert!(m.issues[0].problem.contains("`x`"), "{}", m.issues[0]);
        assert_eq!(m.name_mismatches, 0);
    }

    #[test]
    fn files_of_different_lengths_are_refused_and_name_mismatches_counted() {
        let d = tempfile::tempdir().unwrap();
        let l = write(d.path(), "l.txt", "a.jpg 1 2 3 4 5 6 7 8 9 10 0.9\nb.jpg 1 2 3 4 5 6 7 8 9 10 0.9\n");
        let t = write(d.path(), "t.txt", "a.jpg 1 7\n");
        let e = Meta::read(&l, &t).unwrap_err().to_string();
        assert!(e.contains("2 lines") && e.contains("has 1"), "{e}");
        let t = write(d.path(), "t.txt", "a.jpg 1 7\nc.jpg 1 7\n");
        assert_eq!(Meta::read(&l, &t).unwrap().name_mismatches, 1);
    }

    #[test]
    fn pairs_and_csvs_report_bad_lines() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "p.txt", "1 2 1\n1 3 0\n1 3 2\n4 5\n");
        let (pairs, issues) = read_pairs(&p).unwrap();
        assert_eq!(pairs, [TemplatePair { a: 1, b: 2, genuine: true }, TemplatePair { a: 1, b: 3, genuine: false }]);
        assert_eq!(issues.iter().map(|i| i.line).collect::<Vec<_>>(), [3, 4]);
        let c = write(d.path(), "g.csv", "TEMPLATE_ID,SUBJECT_ID,FILENAME\n5,50,a\n5,50,b\n6,60,c\nx,1,d\n5,51,e\n");
        let (ts, issues) = read_template_subjects(&c).unwrap();
        assert_eq!(ts, [(5, 50), (6, 60)]);
        assert_eq!(issues.iter().map(|i| i.line).collect::<Vec<_>>(), [5, 6]);
    }

    #[test]
    fn pooling_averages_within_media_sums_media_weights_by_score_and_normalises() {
        let faces = [
            face("a", 1.0, 1, 10),
            face("b", 1.0, 1, 10),
            face("c", 2.0, 1, 11),
            face("d", 1.0, 2, 12),
            face("e", 1.0, 3, 13),
        ];
        let (fa, fb, fc, fd) = ([1.0f32, 0.0], [3.0f32, 0.0], [0.0f32, 1.0], [0.0f32, 5.0]);
        let feats: Vec<Option<&[f32]>> = vec![Some(&fa), Some(&fb), Some(&fc), Some(&fd), None];
        let t = pool_templates(&faces, &feats, 2).unwrap();
        // Template 1: media 10 mean (2, 0), media 11 (0, 2) * 1 -> (2, 2) -> normalised.
        let f = t.feature(1).unwrap();
        let r = 0.5f64.sqrt();
        assert!((f[0] - r).abs() < 1e-12 && (f[1] - r).abs() < 1e-12, "{f:?}");
        assert_eq!(t.feature(2).unwrap(), [0.0, 1.0]);
        assert_eq!(t.feature(3).unwrap(), [0.0, 0.0]);
        assert_eq!(t.empty, [3]);
        assert!(t.feature(4).is_none());
        let pairs = [
            TemplatePair { a: 1, b: 2, genuine: true },
            TemplatePair { a: 2, b: 3, genuine: false },
            TemplatePair { a: 1, b: 4, genuine: false },
            TemplatePair { a: 1, b: 1, genuine: false },
        ];
        let (s, v) = verification(&t, &pairs).unwrap();
        assert!((s[0] - r).abs() < 1e-12 && s[1] == 0.0 && s[2].is_nan() && (s[3] - 1.0).abs() < 1e-12);
        assert_eq!((v.pairs_scored, v.pairs_unknown_template, v.pairs_empty_template), (3, 1, 1));
    }

    #[test]
    fn nearest_tar_is_insightfaces_argmin_and_may_exceed_the_target() {
        let roc = [
            RocPoint { far: 0.0, tar: 0.0, threshold: f64::INFINITY },
            RocPoint { far: 0.0, tar: 0.5, threshold: 0.9 },
            RocPoint { far: 0.12, tar: 0.9, threshold: 0.5 },
            RocPoint { far: 1.0, tar: 1.0, threshold: 0.1 },
        ];
        let t = nearest_tar(&roc, 10, &[0.1, 1e-3]);
        assert_eq!((t[0].tar, t[0].far), (0.9, 0.12));
        // Two points have FPR 0: np.argmin takes the first, the origin, so TAR 0 (insightface does).
        assert_eq!((t[1].tar, t[1].far), (0.0, 0.0));
        assert!(t[0].measurable && !t[1].measurable);
    }

    #[test]
    fn largest_keeps_the_k_largest_largest_first() {
        let v = [0.3, -1.0, 0.9, 0.3, 0.5, 0.1];
        assert_eq!(largest(v.into_iter(), 3), [0.9, 0.5, 0.3]);
        assert_eq!(largest(v.into_iter(), 10).len(), 6);
        assert!(largest(v.into_iter(), 0).is_empty());
    }

    #[test]
    fn identification_ranks_and_thresholds() {
        // Three subjects, one gallery template each (two in G1, one in G2), unit features in 2-D.
        let unit = |a: f64| [a.cos(), a.sin()];
        let mut index = BTreeMap::new();
        let mut features = Vec::new();
        for (row, (t, a)) in
            [(1u64, 0.0), (2, 1.0), (3, 2.0), (11, 0.1), (12, 1.85), (13, 2.45)].into_iter().enumerate()
        {
            index.insert(t, row);
            features.extend(unit(a));
        }
        let t = Templates { dim: 2, index, features, empty: vec![] };
        let g = [
            Gallery { name: "G1".into(), templates: vec![(1, 100), (2, 200)] },
            Gallery { name: "G2".into(), templates: vec![(3, 300)] },
        ];
        // Probe 11 (subject 100) is nearest its mate 1; 12 (subject 200) is nearer 3 than its mate 2:
        // rank 2; 13 (subject 300) is nearest its mate 3; 99 has no face and no mate.
        let probes = [(11, 100), (12, 200), (13, 300), (99, 400)];
        let r = identification(&t, &g, &probes).unwrap();
        assert_eq!(r.unknown_templates, 1);
        let c = &r.insightface;
        assert_eq!((c.probes, c.probes_without_mate), (3, 1));
        assert!((c.top1 - 2.0 / 3.0).abs() < 1e-12 && c.top5 == 1.0);
        // ceil(3 * 0.01) = 1: the largest non-mate score, 12 against 3, cos(0.15); only 11's mate is above.
        for at in &c.tpir_at_far {
            assert!((at.threshold - 0.15f64.cos()).abs() < 1e-12, "{at:?}");
            assert!((at.tpir - 1.0 / 3.0).abs() < 1e-12);
        }
        let g1 = &r.open_set[0];
        assert_eq!((g1.mated, g1.non_mated), (2, 2));
        assert_eq!((g1.rank1, g1.rank5), (1.0, 1.0));
        // k = floor(0.01 * 2) = 0: the threshold is the largest non-mated top score (13 -> 2, cos 1.45).
        assert!((g1.tpir_at_fpir[0].threshold - 1.45f64.cos()).abs() < 1e-12);
        assert_eq!((g1.tpir_at_fpir[0].fpir, g1.tpir_at_fpir[0].tpir), (Some(0.0), 1.0));
        assert!(g1.tpir_at_fpir[0].note.is_some());
        let g2 = &r.open_set[1];
        assert_eq!((g2.mated, g2.non_mated, g2.rank1), (1, 3, 1.0));
        // 12's top score in G2, cos(0.15), is above 13's mate score cos(0.45).
        assert_eq!(g2.tpir_at_fpir[1].tpir, 0.0);
        let dup = [Gallery { name: "G1".into(), templates: vec![(1, 100), (2, 100)] }];
        assert!(identification(&t, &dup, &probes).unwrap_err().to_string().contains("subject 100"));
    }
}
