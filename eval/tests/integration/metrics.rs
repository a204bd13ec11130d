//! Verification metrics checked against an independent implementation: insightface's k-fold logic
//! re-implemented in numpy and scikit-learn's `roc_curve`, run in the project venv
//! (`scripts/eval_reference.py`).

use facekit_eval::allpairs::{all_pairs, AllPairsOptions};
use facekit_eval::metrics::{self, RocPoint};
use facekit_eval::npy::{self, Matrix};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

const DIM: usize = 64;

/// A unit vector near `base` (noise `spread`).
fn near(rng: &mut ChaCha8Rng, base: &[f32], spread: f32) -> Vec<f32> {
    let mut v: Vec<f32> = base.iter().map(|b| b + spread * (rng.random::<f32>() - 0.5)).collect();
    metrics::l2_normalize(&mut v);
    v
}

fn random_unit(rng: &mut ChaCha8Rng) -> Vec<f32> {
    near(rng, &[0.0; DIM], 1.0)
}

struct Case {
    pairs: Vec<f32>,
    issame: Vec<bool>,
    scores: Vec<f64>,
    genuine: Vec<bool>,
    gallery: Vec<f32>,
    labels: Vec<u32>,
}

/// Overlapping genuine and impostor distributions, so that thresholds and folds matter.
fn make_case(n_pairs: usize) -> Case {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let (mut pairs, mut issame) = (Vec::new(), Vec::new());
    for k in 0..n_pairs {
        let same = (k / 30) % 2 == 0;
        let a = random_unit(&mut rng);
        let spread = 2.0 * rng.random::<f32>();
        let b = if same { near(&mut rng, &a, spread) } else { random_unit(&mut rng) };
        pairs.extend(a);
        pairs.extend(b);
        issame.push(same);
    }
    // Scores rounded to two decimals, so that the ROC has ties.
    let (mut scores, mut genuine) = (Vec::new(), Vec::new());
    for i in 0..400 {
        let g = i % 3 == 0;
        let s: f64 = rng.random::<f64>() + if g { 0.4 } else { 0.0 };
        scores.push((s * 100.0).round() / 100.0);
        genuine.push(g);
    }
    let (mut gallery, mut labels) = (Vec::new(), Vec::new());
    for id in 0..12u32 {
        let centre = random_unit(&mut rng);
        for _ in 0..(3 + id as usize % 4) {
            gallery.extend(near(&mut rng, &centre, 0.15));
            labels.push(id);
        }
    }
    Case { pairs, issame, scores, genuine, gallery, labels }
}

fn reference(case: &Case, folds: usize) -> Value {
    let dir = tempfile::tempdir().unwrap();
    npy::write_f32(&dir.path().join("pairs.npy"), case.issame.len() * 2, DIM, &case.pairs).unwrap();
    npy::write_f32(&dir.path().join("gallery.npy"), case.labels.len(), DIM, &case.gallery).unwrap();
    let input = json!({
        "issame": case.issame, "folds": folds, "scores": case.scores, "genuine": case.genuine,
        "far_targets": metrics::FAR_TARGETS, "labels": case.labels,
    });
    std::fs::write(dir.path().join("input.json"), input.to_string()).unwrap();
    let script = facekit_testkit::workspace_root().join("scripts/eval_reference.py");
    let out = std::process::Command::new(facekit_testkit::venv_python()).arg(script).arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "reference script failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap()
}

fn assert_close(ours: f64, theirs: f64, what: &str) {
    assert!((ours - theirs).abs() < 1e-9, "{what}: facekit {ours}, reference {theirs}");
}

fn assert_roc_eq(ours: &[RocPoint], theirs: &Value, what: &str) {
    let theirs = theirs.as_array().unwrap();
    assert_eq!(ours.len(), theirs.len(), "{what}: number of ROC points");
    for (p, t) in ours.iter().zip(theirs) {
        assert_close(p.far, f(&t[0]), what);
        assert_close(p.tar, f(&t[1]), what);
        match t[2].as_f64() {
            Some(th) => assert_close(p.threshold, th, what),
            None => assert!(p.threshold.is_infinite(), "{what}: first threshold should be infinite"),
        }
    }
}

fn check_kfold(n_pairs: usize) {
    let case = make_case(n_pairs);
    let reference = reference(&case, 10);
    let r = &reference["kfold"];
    let dist: Vec<f64> = (0..n_pairs)
        .map(|k| {
            metrics::squared_l2(
                &case.pairs[2 * k * DIM..(2 * k + 1) * DIM],
                &case.pairs[(2 * k + 1) * DIM..(2 * k + 2) * DIM],
            )
        })
        .collect();
    let ours = metrics::kfold_verification(&dist, &case.issame, &metrics::insightface_thresholds(), 10).unwrap();
    assert_close(ours.accuracy_mean, f(&r["accuracy_mean"]), "mean accuracy");
    assert_close(ours.accuracy_std, f(&r["accuracy_std"]), "accuracy std");
    for (k, (a, t)) in ours.fold_accuracy.iter().zip(&ours.fold_threshold).enumerate() {
        assert_close(*a, f(&r["fold_accuracy"][k]), "fold accuracy");
        assert_close(*t, f(&r["fold_threshold"][k]), "fold best threshold");
    }
    for i in 0..ours.tpr.len() {
        assert_close(ours.tpr[i], f(&r["tpr"][i]), "mean fold tpr");
        assert_close(ours.fpr[i], f(&r["fpr"][i]), "mean fold fpr");
    }
    // The case must be hard enough that the threshold choice matters.
    assert!(ours.accuracy_mean > 0.6 && ours.accuracy_mean < 0.99, "accuracy {}", ours.accuracy_mean);
}

#[test]
fn kfold_accuracy_and_thresholds_match_insightface_logic_in_numpy() {
    check_kfold(600);
}

#[test]
fn kfold_with_uneven_folds_matches_sklearn_kfold_split() {
    check_kfold(607);
}

#[test]
fn roc_points_and_tar_at_far_match_sklearn_roc_curve() {
    let case = make_case(20);
    let reference = reference(&case, 2);
    let r = &reference["roc"];
    let full = metrics::roc_curve(&case.scores, &case.genuine).unwrap();
    assert_roc_eq(&full, &r["full"], "full ROC");
    let g = case.genuine.iter().filter(|&&g| g).count() as u64;
    let i = case.genuine.len() as u64 - g;
    assert_roc_eq(&metrics::drop_collinear(&full, g, i), &r["drop"], "ROC without collinear points");
    let tar = metrics::tar_at_far(&full, i, &metrics::FAR_TARGETS);
    for (k, t) in tar.iter().enumerate() {
        match r["tar_at_far"][k].as_f64() {
            Some(v) => assert_close(t.tar.unwrap(), v, &format!("TAR at FAR {}", t.far_target)),
            None => assert!(t.tar.is_none() && t.note.is_some(), "FAR {} needs more impostors", t.far_target),
        }
    }
}

#[test]
fn all_pairs_verification_matches_brute_force_numpy() {
    let case = make_case(20);
    let reference = reference(&case, 2);
    let r = &reference["all_pairs"];
    let m = Matrix { rows: case.labels.len(), cols: DIM, data: case.gallery.clone() };
    let labels: Vec<Option<u32>> = case.labels.iter().map(|&l| Some(l)).collect();
    let ours = all_pairs(&m, &labels, AllPairsOptions::default()).unwrap();
    assert_eq!(ours.pairs.genuine, r["genuine"].as_u64().unwrap());
    assert_eq!(ours.pairs.impostor, r["impostor"].as_u64().unwrap());
    assert_eq!(ours.pairs.selection, "all");
    assert!((ours.genuine_mean - f(&r["genuine_mean"])).abs() < 1e-6);
    assert!((ours.impostor_mean - f(&r["impostor_mean"])).abs() < 1e-6);
    for (k, t) in ours.tar_at_far.iter().enumerate() {
        match r["tar_at_far"][k].as_f64() {
            Some(v) => assert!((t.tar.unwrap() - v).abs() < 1e-9, "TAR at FAR {}", t.far_target),
            None => assert!(t.tar.is_none(), "FAR {} should be unsupported", t.far_target),
        }
    }
    // f32 embeddings give scores that differ from numpy's float64 in the last bits: compare the
    // curve's shape, not exact thresholds.
    let theirs = r["roc_drop"].as_array().unwrap();
    assert_eq!(ours.roc.len(), theirs.len());
    for (p, t) in ours.roc.iter().zip(theirs) {
        assert!((p.far - f(&t[0])).abs() < 1e-9 && (p.tar - f(&t[1])).abs() < 1e-9);
    }
}

#[test]
fn sampled_all_pairs_is_deterministic_and_reports_the_sample() {
    let case = make_case(20);
    let m = Matrix { rows: case.labels.len(), cols: DIM, data: case.gallery };
    let labels: Vec<Option<u32>> = case.labels.iter().map(|&l| Some(l)).collect();
    let opts = AllPairsOptions { max_pairs: 500, seed: 3 };
    let a = all_pairs(&m, &labels, opts).unwrap();
    let b = all_pairs(&m, &labels, opts).unwrap();
    assert_eq!(a.pairs.genuine + a.pairs.impostor, 500);
    assert!(a.pairs.selection.contains("seed 3"), "{}", a.pairs.selection);
    assert_eq!(a.auc, b.auc);
    assert!(a.tar_at_far[2].tar.is_none(), "500 pairs cannot measure FAR 1e-3");
}

#[test]
fn an_embedding_row_that_is_nan_is_named_not_scored() {
    let case = make_case(20);
    let mut data = case.gallery;
    data[5 * DIM + 1] = f32::NAN;
    data[9 * DIM] = f32::INFINITY;
    let m = Matrix { rows: case.labels.len(), cols: DIM, data };
    let labels: Vec<Option<u32>> = case.labels.iter().map(|&l| Some(l)).collect();
    let err = all_pairs(&m, &labels, AllPairsOptions::default()).unwrap_err().to_string();
    assert!(err.contains("embedding row 5 (2 of the") && err.contains("NaN or infinite"), "{err}");
}

#[test]
fn nan_distances_in_the_kfold_protocol_are_an_error_not_pairs_called_different() {
    let case = make_case(200);
    let pairs: Vec<(&[f32], &[f32])> = case.pairs.chunks(2 * DIM).map(|p| p.split_at(DIM)).collect();
    let mut dist: Vec<f64> = pairs.iter().map(|(a, b)| metrics::squared_l2(a, b)).collect();
    metrics::kfold_verification(&dist, &case.issame, &metrics::insightface_thresholds(), 10).unwrap();
    // All-NaN embeddings once scored 0.5: every `dist < threshold` false, every pair "different".
    dist.iter_mut().for_each(|d| *d = f64::NAN);
    let err = metrics::kfold_verification(&dist, &case.issame, &metrics::insightface_thresholds(), 10)
        .unwrap_err()
        .to_string();
    assert!(err.contains("pair 0 is NaN") && err.contains("200 of the 200 pairs"), "{err}");
}
