//! Validation metrics computed from predictions: accuracy, majority-class baseline, mean absolute
//! error, and verification accuracy over pairs drawn deterministically from the validation set.

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

/// Two validation images and whether they show the same person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pair {
    /// First image (index into the validation set).
    pub a: usize,
    /// Second image.
    pub b: usize,
    /// True when both have the same class.
    pub same: bool,
}

/// Fraction of labelled items (label >= 0) whose prediction equals the label; `None` when no
/// item is labelled.
pub fn accuracy(pred: &[i64], truth: &[i64]) -> Option<f64> {
    let (mut right, mut n) = (0usize, 0usize);
    for (&p, &t) in pred.iter().zip(truth) {
        if t >= 0 {
            n += 1;
            right += usize::from(p == t);
        }
    }
    (n > 0).then(|| right as f64 / n as f64)
}

/// Accuracy of always answering the most frequent label: what a classifier must beat.
pub(crate) fn majority_baseline(truth: &[i64]) -> Option<f64> {
    let mut counts: BTreeMap<i64, usize> = BTreeMap::new();
    for &t in truth.iter().filter(|&&t| t >= 0) {
        *counts.entry(t).or_default() += 1;
    }
    let n: usize = counts.values().sum();
    counts.values().max().map(|&m| m as f64 / n as f64)
}

/// Mean absolute error over labelled items (label >= 0); `None` when none is labelled.
pub(crate) fn mean_absolute_error(pred: &[f64], truth: &[i64]) -> Option<f64> {
    let errs: Vec<f64> = pred.iter().zip(truth).filter(|(_, &t)| t >= 0).map(|(&p, &t)| (p - t as f64).abs()).collect();
    (!errs.is_empty()).then(|| errs.iter().sum::<f64>() / errs.len() as f64)
}

/// Draws up to `n` same-class and `n` different-class pairs from `classes` (-1: unknown, never
/// used), reproducibly from `seed`, so that every validation of a run scores the same pairs.
pub(crate) fn verification_pairs(classes: &[i64], n: usize, seed: u64) -> Vec<Pair> {
    let mut by_class: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for (i, &c) in classes.iter().enumerate().filter(|(_, &c)| c >= 0) {
        by_class.entry(c).or_default().push(i);
    }
    let labelled: Vec<usize> = by_class.values().flatten().copied().collect();
    let multi: Vec<&Vec<usize>> = by_class.values().filter(|v| v.len() >= 2).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut pairs = Vec::with_capacity(2 * n);
    if !multi.is_empty() {
        for _ in 0..n {
            let members = multi.choose(&mut rng).expect("non-empty");
            let a = rng.random_range(0..members.len());
            let mut b = rng.random_range(0..members.len() - 1);
            if b >= a {
                b += 1;
            }
            pairs.push(Pair { a: members[a], b: members[b], same: true });
        }
    }
    if by_class.len() >= 2 {
        let mut made = 0;
        while made < n {
            let a = *labelled.choose(&mut rng).expect("non-empty");
            let b = *labelled.choose(&mut rng).expect("non-empty");
            if classes[a] != classes[b] {
                pairs.push(Pair { a, b, same: false });
                made += 1;
            }
        }
    }
    pairs
}

/// Verification accuracy at the best single threshold on `scores` (higher = more alike), and that
/// threshold; `None` without scores. The threshold is chosen on the same pairs, so this is an
/// optimistic figure meant for tracking training, not for reporting (use `facekit eval` with folds
/// for that). A NaN or infinite score is an error naming the pair: no threshold places it
/// meaningfully, and a figure computed around it would look valid.
pub(crate) fn best_threshold_accuracy(scores: &[f64], same: &[bool]) -> anyhow::Result<Option<(f64, f64)>> {
    if let Some(k) = scores.iter().position(|s| !s.is_finite()) {
        anyhow::bail!(
            "verification pair {k} of {} has the score {} (its embeddings are not finite)",
            scores.len(),
            scores[k]
        );
    }
    if scores.is_empty() {
        return Ok(None);
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&i, &j| scores[i].total_cmp(&scores[j]));
    let n = scores.len();
    let positives = same.iter().filter(|&&s| s).count();
    // Threshold below everything: every pair called "same".
    let mut correct = positives;
    let mut best = (correct, f64::NEG_INFINITY);
    let mut k = 0;
    while k < n {
        // Move every pair with this score to the "different" side at once. Each pass takes at
        // least one pair, so the sweep ends whatever the scores are.
        let s = scores[order[k]];
        loop {
            if same[order[k]] {
                correct -= 1;
            } else {
                correct += 1;
            }
            k += 1;
            if k == n || scores[order[k]] != s {
                break;
            }
        }
        if correct > best.0 {
            let next = if k < n { scores[order[k]] } else { s + 1.0 };
            best = (correct, (s + next) / 2.0);
        }
    }
    Ok(Some((best.0 as f64 / n as f64, best.1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracy_ignores_unknown_labels() {
        assert_eq!(accuracy(&[1, 0, 1, 1], &[1, -1, 0, 1]), Some(2.0 / 3.0));
        assert_eq!(accuracy(&[1], &[-1]), None);
    }

    #[test]
    fn majority_baseline_is_share_of_most_frequent_label() {
        assert_eq!(majority_baseline(&[0, 1, 1, 1, -1]), Some(0.75));
    }

    #[test]
    fn mean_absolute_error_skips_unknown_ages() {
        assert_eq!(mean_absolute_error(&[10.0, 50.0, 30.0], &[12, -1, 26]), Some(3.0));
    }

    #[test]
    fn perfectly_separated_scores_give_full_accuracy() {
        let (acc, thr) = best_threshold_accuracy(&[0.9, 0.1, 0.8, 0.2], &[true, false, true, false]).unwrap().unwrap();
        assert_eq!(acc, 1.0);
        assert!(thr > 0.2 && thr < 0.8, "threshold {thr}");
    }

    #[test]
    fn best_threshold_matches_brute_force() {
        let scores = [0.3, 0.5, 0.5, 0.1, 0.9, 0.7, 0.2, 0.6];
        let same = [false, true, false, false, true, false, true, true];
        let brute = scores
            .iter()
            .chain([&-1.0, &2.0])
            .map(|&t| scores.iter().zip(&same).filter(|(&s, &y)| (s > t) == y).count())
            .max()
            .unwrap();
        let (acc, thr) = best_threshold_accuracy(&scores, &same).unwrap().unwrap();
        assert_eq!(acc, brute as f64 / scores.len() as f64);
        let at_thr = scores.iter().zip(&same).filter(|(&s, &y)| (s > thr) == y).count();
        assert_eq!(at_thr, brute);
    }

    #[test]
    fn a_nan_or_infinite_score_is_an_error_naming_its_pair_not_an_endless_sweep() {
        let err = best_threshold_accuracy(&[0.9, f64::NAN, 0.2], &[true, true, false]).unwrap_err().to_string();
        assert!(err.contains("pair 1 of 3") && err.contains("NaN"), "{err}");
        assert!(best_threshold_accuracy(&[f64::NAN; 4], &[true, false, true, false]).is_err());
        assert!(best_threshold_accuracy(&[0.5, f64::INFINITY], &[true, false]).is_err());
    }

    #[test]
    fn pairs_are_reproducible_and_labelled_correctly() {
        let classes = [0, 0, 1, 1, 2, -1, 2, 3];
        let p = verification_pairs(&classes, 20, 7);
        assert_eq!(p, verification_pairs(&classes, 20, 7));
        assert_eq!(p.len(), 40);
        for pair in &p {
            assert_ne!(pair.a, pair.b);
            assert!(classes[pair.a] >= 0 && classes[pair.b] >= 0);
            assert_eq!(pair.same, classes[pair.a] == classes[pair.b]);
        }
    }
}
