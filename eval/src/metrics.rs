//! Verification metrics: insightface's k-fold LFW accuracy, ROC curves and TAR at a given FAR.
//!
//! The k-fold protocol reproduces `calculate_roc` / `calculate_accuracy` of insightface's
//! `recognition/arcface_torch/eval/verification.py`: distances are squared L2 between normalised
//! embeddings, a pair is predicted "same" when `dist < threshold`, the thresholds are
//! `np.arange(0, 4, 0.01)`, folds are scikit-learn's unshuffled `KFold` (consecutive, the first
//! `n % k` folds one pair larger), the best threshold of the training folds is the first maximum
//! (`np.argmax`), and the reported spread is the population standard deviation (`np.std`).

use anyhow::{bail, Result};
use serde::Serialize;

/// insightface's threshold grid over squared L2 distance: `np.arange(0, 4, 0.01)` (400 values).
pub fn insightface_thresholds() -> Vec<f64> {
    // numpy's arange computes start + i * step, which is what this reproduces bit for bit.
    (0..400).map(|i| i as f64 * 0.01).collect()
}

/// Squared Euclidean distance between two embeddings, accumulated in f64 like numpy on float64.
pub fn squared_l2(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| (x as f64 - y as f64).powi(2)).sum()
}

/// Cosine similarity of two embeddings (not assumed normalised); 0 when either is zero.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        dot += x as f64 * y as f64;
        na += x as f64 * x as f64;
        nb += y as f64 * y as f64;
    }
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na.sqrt() * nb.sqrt())
    }
}

/// Scales `v` to unit L2 norm in place (left unchanged when it is all zeros), like
/// `sklearn.preprocessing.normalize`.
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
    if norm > 0.0 {
        for x in v {
            *x = (*x as f64 / norm) as f32;
        }
    }
}

/// Confusion counts of `dist < threshold` against the truth.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Confusion {
    /// Same-person pairs predicted same.
    pub tp: u64,
    /// Different-person pairs predicted same.
    pub fp: u64,
    /// Different-person pairs predicted different.
    pub tn: u64,
    /// Same-person pairs predicted different.
    pub fn_: u64,
}

impl Confusion {
    /// Counts the predictions `dist[i] < threshold` for the pairs in `idx`.
    pub fn at(threshold: f64, dist: &[f64], issame: &[bool], idx: &[usize]) -> Self {
        let mut c = Confusion::default();
        for &i in idx {
            match (dist[i] < threshold, issame[i]) {
                (true, true) => c.tp += 1,
                (true, false) => c.fp += 1,
                (false, false) => c.tn += 1,
                (false, true) => c.fn_ += 1,
            }
        }
        c
    }

    /// True positive rate, 0 when there are no positives (as insightface).
    pub fn tpr(&self) -> f64 {
        ratio(self.tp, self.tp + self.fn_)
    }

    /// False positive rate, 0 when there are no negatives (as insightface).
    pub fn fpr(&self) -> f64 {
        ratio(self.fp, self.fp + self.tn)
    }

    /// Fraction of correct predictions.
    pub fn accuracy(&self) -> f64 {
        ratio(self.tp + self.tn, self.tp + self.fp + self.tn + self.fn_)
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// The test-fold index ranges of scikit-learn's `KFold(n_splits=k, shuffle=False)` over `n` items.
pub(crate) fn kfold_ranges(n: usize, k: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::with_capacity(k);
    let mut start = 0;
    for f in 0..k {
        let size = n / k + usize::from(f < n % k);
        out.push(start..start + size);
        start += size;
    }
    out
}

/// The outcome of k-fold verification.
#[derive(Debug, Clone, Serialize)]
pub struct KFoldReport {
    /// Number of pairs scored.
    pub pairs: usize,
    /// Number of folds.
    pub folds: usize,
    /// Mean test-fold accuracy (insightface's "Accuracy-Flip" when embeddings were flip-summed).
    pub accuracy_mean: f64,
    /// Population standard deviation of the test-fold accuracies (`np.std`).
    pub accuracy_std: f64,
    /// Accuracy of each test fold.
    pub fold_accuracy: Vec<f64>,
    /// Squared-L2 threshold chosen on the other folds, for each test fold.
    pub fold_threshold: Vec<f64>,
    /// Mean of the per-fold thresholds (squared L2 distance; a pair is "same" below it).
    pub best_threshold: f64,
    /// The same threshold as a cosine similarity (`1 - d/2` for unit vectors; "same" above it).
    pub best_threshold_cosine: f64,
    /// ROC over the threshold grid: test-fold TPR averaged over folds (insightface's `tpr`).
    pub tpr: Vec<f64>,
    /// ROC over the threshold grid: test-fold FPR averaged over folds (insightface's `fpr`).
    pub fpr: Vec<f64>,
    /// The threshold grid (squared L2).
    pub thresholds: Vec<f64>,
}

/// insightface's `calculate_roc`: picks the best threshold on k-1 folds and scores the k-th, the
/// folds cut as scikit-learn's `KFold(k)` cuts them (consecutive, equal within one). A NaN or
/// infinite distance is an error naming the pair: `dist < threshold` is false for NaN, so every
/// such pair would silently count as "different" and a network whose embeddings are all NaN
/// would score 0.5.
pub fn kfold_verification(dist: &[f64], issame: &[bool], thresholds: &[f64], folds: usize) -> Result<KFoldReport> {
    let n = dist.len();
    if folds < 1 || (folds > 1 && n < folds) {
        bail!("{n} pairs cannot be split into {folds} folds");
    }
    let tests = kfold_ranges(n, folds).into_iter().map(Iterator::collect).collect();
    cross_validate(dist, issame, thresholds, tests)
}

/// [`kfold_verification`] over folds given pair by pair (`fold_of[i]` is pair `i`'s fold), such
/// as a pairs file's own when some of its pairs were left out: cutting what is left into equal
/// consecutive folds again would move pairs across the file's folds and test a threshold on
/// pairs it was chosen on. A fold left with no pair is not scored (`folds` counts the rest).
pub fn kfold_verification_by_fold(
    dist: &[f64],
    issame: &[bool],
    thresholds: &[f64],
    fold_of: &[usize],
) -> Result<KFoldReport> {
    if fold_of.len() != dist.len() {
        bail!("{} distances but {} fold numbers", dist.len(), fold_of.len());
    }
    let mut tests: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for (i, &f) in fold_of.iter().enumerate() {
        tests.entry(f).or_default().push(i);
    }
    if tests.is_empty() {
        bail!("no pairs to score");
    }
    cross_validate(dist, issame, thresholds, tests.into_values().collect())
}

/// The k-fold protocol over the given test folds, which partition the pairs.
fn cross_validate(dist: &[f64], issame: &[bool], thresholds: &[f64], tests: Vec<Vec<usize>>) -> Result<KFoldReport> {
    let n = dist.len();
    if n != issame.len() {
        bail!("{} distances but {} same/different labels", n, issame.len());
    }
    if let Some(k) = dist.iter().position(|d| !d.is_finite()) {
        let bad = dist.iter().filter(|d| !d.is_finite()).count();
        bail!("the distance of pair {k} is {} ({bad} of the {n} pairs have no finite distance): the embeddings are NaN or infinite", dist[k]);
    }
    if thresholds.is_empty() {
        bail!("no thresholds to try");
    }
    let folds = tests.len();
    let all: Vec<usize> = (0..n).collect();
    let mut tprs = vec![0.0; thresholds.len()];
    let mut fprs = vec![0.0; thresholds.len()];
    let mut fold_accuracy = Vec::with_capacity(folds);
    let mut fold_threshold = Vec::with_capacity(folds);
    let mut in_test = vec![false; n];
    for test_idx in &tests {
        test_idx.iter().for_each(|&i| in_test[i] = true);
        // insightface's LFold with one split trains and tests on everything.
        let train_idx: Vec<usize> =
            if folds == 1 { all.clone() } else { all.iter().copied().filter(|&i| !in_test[i]).collect() };
        test_idx.iter().for_each(|&i| in_test[i] = false);
        let mut best = (0usize, f64::NEG_INFINITY);
        for (t, &th) in thresholds.iter().enumerate() {
            let acc = Confusion::at(th, dist, issame, &train_idx).accuracy();
            // Strictly greater keeps the first maximum, as np.argmax does.
            if acc > best.1 {
                best = (t, acc);
            }
            let c = Confusion::at(th, dist, issame, test_idx);
            tprs[t] += c.tpr();
            fprs[t] += c.fpr();
        }
        let th = thresholds[best.0];
        fold_threshold.push(th);
        fold_accuracy.push(Confusion::at(th, dist, issame, test_idx).accuracy());
    }
    let k = fold_accuracy.len() as f64;
    let accuracy_mean = fold_accuracy.iter().sum::<f64>() / k;
    let accuracy_std = (fold_accuracy.iter().map(|a| (a - accuracy_mean).powi(2)).sum::<f64>() / k).sqrt();
    let best_threshold = fold_threshold.iter().sum::<f64>() / k;
    Ok(KFoldReport {
        pairs: n,
        folds,
        accuracy_mean,
        accuracy_std,
        fold_accuracy,
        fold_threshold,
        best_threshold,
        best_threshold_cosine: 1.0 - best_threshold / 2.0,
        tpr: tprs.iter().map(|t| t / k).collect(),
        fpr: fprs.iter().map(|f| f / k).collect(),
        thresholds: thresholds.to_vec(),
    })
}

/// One point of a ROC curve over similarity scores.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RocPoint {
    /// False accept rate: impostor pairs scoring at or above `threshold`, over all impostor pairs.
    pub far: f64,
    /// True accept rate: genuine pairs scoring at or above `threshold`, over all genuine pairs.
    pub tar: f64,
    /// Similarity threshold (pairs scoring `>= threshold` are accepted); +inf for the (0, 0) point.
    pub threshold: f64,
}

/// The ROC curve of similarity `scores` (higher means more alike) against `genuine`, with one point
/// per distinct score, as `sklearn.metrics.roc_curve(..., drop_intermediate=False)`; the first
/// point is (0, 0) at an infinite threshold. Fails when either class is empty or a score is NaN.
pub fn roc_curve(scores: &[f64], genuine: &[bool]) -> Result<Vec<RocPoint>> {
    if scores.len() != genuine.len() {
        bail!("{} scores but {} labels", scores.len(), genuine.len());
    }
    if let Some(k) = scores.iter().position(|s| s.is_nan()) {
        bail!("similarity score {k} is NaN (were the embeddings NaN?)");
    }
    let positives = genuine.iter().filter(|&&g| g).count() as u64;
    let negatives = genuine.len() as u64 - positives;
    if positives == 0 || negatives == 0 {
        bail!("a ROC curve needs both genuine ({positives}) and impostor ({negatives}) pairs");
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_unstable_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut points = vec![RocPoint { far: 0.0, tar: 0.0, threshold: f64::INFINITY }];
    let (mut tp, mut fp) = (0u64, 0u64);
    for (rank, &i) in order.iter().enumerate() {
        if genuine[i] {
            tp += 1;
        } else {
            fp += 1;
        }
        let last_of_value = order.get(rank + 1).is_none_or(|&j| scores[j] != scores[i]);
        if last_of_value {
            points.push(RocPoint {
                far: fp as f64 / negatives as f64,
                tar: tp as f64 / positives as f64,
                threshold: scores[i],
            });
        }
    }
    Ok(points)
}

/// Drops the ROC points that lie on a straight segment between their neighbours, exactly as
/// scikit-learn's `drop_intermediate=True` does: second differences of the counts are tested on
/// the score points only, before the (0, 0) point at an infinite threshold is put in front.
pub fn drop_collinear(points: &[RocPoint], genuine: u64, impostor: u64) -> Vec<RocPoint> {
    let Some((origin, curve)) = points.split_first() else { return Vec::new() };
    if curve.len() <= 2 {
        return points.to_vec();
    }
    // Work on the integer counts so that collinearity is exact, as in scikit-learn.
    let counts: Vec<(i64, i64)> = curve
        .iter()
        .map(|p| ((p.far * impostor as f64).round() as i64, (p.tar * genuine as f64).round() as i64))
        .collect();
    let mut out = vec![*origin, curve[0]];
    for i in 1..curve.len() - 1 {
        let d2f = counts[i + 1].0 - 2 * counts[i].0 + counts[i - 1].0;
        let d2t = counts[i + 1].1 - 2 * counts[i].1 + counts[i - 1].1;
        if d2f != 0 || d2t != 0 {
            out.push(curve[i]);
        }
    }
    out.push(curve[curve.len() - 1]);
    out
}

/// TAR at one FAR target.
#[derive(Debug, Clone, Serialize)]
pub struct TarAtFar {
    /// The FAR target (1e-1 ... 1e-6).
    pub far_target: f64,
    /// The best TAR among operating points whose FAR does not exceed the target; `None` when the
    /// impostor pairs are too few to measure this FAR (it needs at least `1/far_target` of them).
    pub tar: Option<f64>,
    /// The FAR actually achieved at that operating point.
    pub far: Option<f64>,
    /// Similarity threshold of that operating point (accept `>= threshold`).
    pub threshold: Option<f64>,
    /// Why `tar` is absent, when it is.
    pub note: Option<String>,
}

/// TAR at each FAR target from a full ROC (as returned by [`roc_curve`]): the highest TAR whose FAR
/// is at most the target. Targets needing more impostor pairs than `impostors` are reported as
/// unsupported rather than guessed.
pub fn tar_at_far(points: &[RocPoint], impostors: u64, targets: &[f64]) -> Vec<TarAtFar> {
    targets
        .iter()
        .map(|&target| {
            if (impostors as f64) < (1.0 / target).round() {
                return TarAtFar {
                    far_target: target,
                    tar: None,
                    far: None,
                    threshold: None,
                    note: Some(format!(
                        "FAR {target:e} needs at least {:.0} impostor pairs, there are {impostors}",
                        (1.0 / target).round()
                    )),
                };
            }
            // FAR and TAR both grow along the curve, so the last point within the target is best.
            let best = points.iter().filter(|p| p.far <= target).max_by(|a, b| a.tar.total_cmp(&b.tar));
            TarAtFar {
                far_target: target,
                tar: best.map(|p| p.tar),
                far: best.map(|p| p.far),
                threshold: best.map(|p| p.threshold),
                note: None,
            }
        })
        .collect()
}

/// The FAR targets reported by default: 1e-1 down to 1e-6.
pub const FAR_TARGETS: [f64; 6] = [1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6];

/// Area under a ROC curve by the trapezoidal rule.
pub fn auc(points: &[RocPoint]) -> f64 {
    points.windows(2).map(|w| (w[1].far - w[0].far) * (w[1].tar + w[0].tar) / 2.0).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kfold_ranges_match_sklearn_sizes() {
        let r = kfold_ranges(23, 10);
        assert_eq!(r[0], 0..3);
        assert_eq!(r[2], 6..9);
        assert_eq!(r[3], 9..11);
        assert_eq!(r[9].end, 23);
    }

    #[test]
    fn perfectly_separated_pairs_score_full_accuracy() {
        let dist: Vec<f64> = (0..40).map(|i| if i % 2 == 0 { 0.5 } else { 2.5 }).collect();
        let same: Vec<bool> = (0..40).map(|i| i % 2 == 0).collect();
        let r = kfold_verification(&dist, &same, &insightface_thresholds(), 10).unwrap();
        assert_eq!(r.accuracy_mean, 1.0);
        assert_eq!(r.accuracy_std, 0.0);
        // First maximum: 0.51 is the smallest grid threshold above every genuine distance.
        assert!((r.best_threshold - 0.51).abs() < 1e-12);
    }

    #[test]
    fn given_folds_that_are_kfolds_cuts_score_as_kfold() {
        let dist: Vec<f64> = (0..47).map(|i| ((i * 37) % 41) as f64 / 10.0).collect();
        let same: Vec<bool> = (0..47).map(|i| (i * 7) % 3 == 0).collect();
        let mut fold_of = vec![0; 47];
        for (f, r) in kfold_ranges(47, 10).into_iter().enumerate() {
            r.for_each(|i| fold_of[i] = f);
        }
        let cut = kfold_verification(&dist, &same, &insightface_thresholds(), 10).unwrap();
        let given = kfold_verification_by_fold(&dist, &same, &insightface_thresholds(), &fold_of).unwrap();
        assert_eq!(serde_json::to_value(&cut).unwrap(), serde_json::to_value(&given).unwrap());
    }

    #[test]
    fn a_pairs_files_folds_are_kept_when_pairs_are_left_out() {
        // Fold 0 lost two of its four pairs; cut again, its test fold would take one of fold 1's.
        let dist = [0.3, 1.0, 0.3, 1.2, 1.5, 1.6];
        let same = [true, false, true, true, false, false];
        let r = kfold_verification_by_fold(&dist, &same, &insightface_thresholds(), &[0, 0, 1, 1, 1, 1]).unwrap();
        // Fold 0 is judged at fold 1's best threshold (just above 1.2): its impostor at 1.0 passes.
        // Fold 1 at fold 0's (just above 0.3): its genuine pair at 1.2 fails.
        assert_eq!(r.fold_accuracy, [0.5, 0.75]);
        let recut = kfold_verification(&dist, &same, &insightface_thresholds(), 2).unwrap();
        assert_ne!(recut.fold_accuracy, r.fold_accuracy);
    }

    #[test]
    fn nan_distances_are_an_error_not_an_accuracy_of_one_half() {
        let mut dist: Vec<f64> = (0..40).map(|i| if i % 2 == 0 { 0.5 } else { 2.5 }).collect();
        let same: Vec<bool> = (0..40).map(|i| i % 2 == 0).collect();
        dist[7] = f64::NAN;
        let err = kfold_verification(&dist, &same, &insightface_thresholds(), 10).unwrap_err().to_string();
        assert!(err.contains("pair 7") && err.contains("1 of the 40"), "{err}");
    }

    #[test]
    fn far_below_one_over_impostor_count_is_reported_unsupported() {
        let scores = [0.9, 0.8, 0.1, 0.2];
        let g = [true, true, false, false];
        let roc = roc_curve(&scores, &g).unwrap();
        let t = tar_at_far(&roc, 2, &[1e-1]);
        assert!(t[0].tar.is_none());
        assert!(t[0].note.as_ref().unwrap().contains("10 impostor pairs"));
    }
}
