//! All-pairs 1:1 verification over labelled embeddings: every genuine pair (same identity) against
//! every impostor pair, scored by cosine similarity, summarised as TAR at FAR and a ROC curve.
//!
//! When the number of pairs exceeds `max_pairs`, the genuine pairs are all kept (up to half the
//! budget) and the impostor pairs are a deterministic uniform sample: index pairs drawn with a
//! ChaCha8 generator seeded with `seed`, rejecting same-identity and self pairs (duplicates are
//! possible and harmless at this scale). The report says which was done.

use super::metrics::{self, RocPoint, TarAtFar};
use super::npy::Matrix;
use anyhow::{bail, Context, Result};
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use serde::Serialize;
use std::io::Write;
use std::path::Path;

/// How the pairs were chosen and how many there are.
#[derive(Debug, Clone, Serialize)]
pub struct PairCounts {
    /// Faces with an identity label.
    pub faces: usize,
    /// Distinct identities.
    pub identities: usize,
    /// Genuine (same-identity) pairs scored.
    pub genuine: u64,
    /// Impostor (different-identity) pairs scored.
    pub impostor: u64,
    /// Genuine pairs that exist in the dataset.
    pub genuine_total: u64,
    /// Impostor pairs that exist in the dataset.
    pub impostor_total: u64,
    /// `"all"`, or a description of the deterministic sample.
    pub selection: String,
}

/// The outcome of all-pairs verification.
#[derive(Debug, Clone, Serialize)]
pub struct AllPairsReport {
    /// Pair counts and selection.
    pub pairs: PairCounts,
    /// TAR at FAR 1e-1 ... 1e-6 (absent where the impostor pairs are too few).
    pub tar_at_far: Vec<TarAtFar>,
    /// Area under the ROC curve.
    pub auc: f64,
    /// Mean cosine similarity of genuine pairs.
    pub genuine_mean: f64,
    /// Mean cosine similarity of impostor pairs.
    pub impostor_mean: f64,
    /// ROC points, collinear points dropped (as scikit-learn's `drop_intermediate`).
    pub roc: Vec<RocPoint>,
}

/// Options of [`all_pairs`].
#[derive(Debug, Clone, Copy)]
pub struct AllPairsOptions {
    /// Most pairs scored in total.
    pub max_pairs: u64,
    /// Seed of the impostor sample.
    pub seed: u64,
}

impl Default for AllPairsOptions {
    fn default() -> Self {
        AllPairsOptions { max_pairs: 50_000_000, seed: 0 }
    }
}

/// Scores all (or a deterministic sample of) pairs of `embeddings` rows whose `labels` are known.
/// A row holding NaN or infinity is an error naming it: its similarities would be NaN, and no
/// figure computed with them means anything.
pub fn all_pairs(embeddings: &Matrix, labels: &[Option<u32>], opts: AllPairsOptions) -> Result<AllPairsReport> {
    if labels.len() != embeddings.rows {
        bail!("{} embeddings but {} labels", embeddings.rows, labels.len());
    }
    let bad: Vec<usize> = (0..embeddings.rows).filter(|&i| embeddings.row(i).iter().any(|x| !x.is_finite())).collect();
    if let Some(first) = bad.first() {
        bail!("embedding row {first} ({} of the {} rows) holds NaN or infinite values", bad.len(), embeddings.rows);
    }
    let idx: Vec<usize> = (0..labels.len()).filter(|&i| labels[i].is_some()).collect();
    let lab: Vec<u32> = idx.iter().map(|&i| labels[i].expect("filtered")).collect();
    let mut normed: Vec<Vec<f32>> = idx.iter().map(|&i| embeddings.row(i).to_vec()).collect();
    normed.iter_mut().for_each(|v| metrics::l2_normalize(v));
    let n = lab.len() as u64;
    let mut per_class = std::collections::HashMap::<u32, u64>::new();
    for &l in &lab {
        *per_class.entry(l).or_default() += 1;
    }
    let genuine_total: u64 = per_class.values().map(|&c| c * (c.saturating_sub(1)) / 2).sum();
    let impostor_total = n * n.saturating_sub(1) / 2 - genuine_total;
    if genuine_total == 0 || impostor_total == 0 {
        bail!("all-pairs verification needs identities with two or more faces and at least two identities ({} faces, {} identities)", n, per_class.len());
    }
    let dot = |a: usize, b: usize| normed[a].iter().zip(&normed[b]).map(|(x, y)| *x as f64 * *y as f64).sum::<f64>();
    let (genuine, impostor, selection) = if genuine_total + impostor_total <= opts.max_pairs {
        // Row by row in parallel; each row yields its pairs with the later faces.
        let rows: Vec<(Vec<f64>, Vec<f64>)> = (0..lab.len())
            .into_par_iter()
            .map(|i| {
                let (mut g, mut m) = (Vec::new(), Vec::new());
                for j in i + 1..lab.len() {
                    if lab[i] == lab[j] {
                        g.push(dot(i, j))
                    } else {
                        m.push(dot(i, j))
                    }
                }
                (g, m)
            })
            .collect();
        let genuine: Vec<f64> = rows.iter().flat_map(|r| r.0.iter().copied()).collect();
        let impostor: Vec<f64> = rows.into_iter().flat_map(|r| r.1).collect();
        (genuine, impostor, "all".to_string())
    } else {
        let genuine_budget = (opts.max_pairs / 2).max(1);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(opts.seed);
        let mut genuine = Vec::new();
        let mut by_class: std::collections::BTreeMap<u32, Vec<usize>> = Default::default();
        for (k, &l) in lab.iter().enumerate() {
            by_class.entry(l).or_default().push(k);
        }
        if genuine_total <= genuine_budget {
            for members in by_class.values() {
                for (a, &i) in members.iter().enumerate() {
                    for &j in &members[a + 1..] {
                        genuine.push(dot(i, j));
                    }
                }
            }
        } else {
            let classes: Vec<&Vec<usize>> = by_class.values().filter(|m| m.len() > 1).collect();
            let weights: Vec<u64> = classes.iter().map(|m| (m.len() * (m.len() - 1) / 2) as u64).collect();
            let dist = rand::distr::weighted::WeightedIndex::new(&weights).context("genuine pair weights")?;
            for _ in 0..genuine_budget {
                let m = classes[rng.sample(&dist)];
                let a = rng.random_range(0..m.len());
                let mut b = rng.random_range(0..m.len() - 1);
                if b >= a {
                    b += 1;
                }
                genuine.push(dot(m[a], m[b]));
            }
        }
        let impostor_budget = opts.max_pairs - genuine.len() as u64;
        let mut picks = Vec::with_capacity(impostor_budget as usize);
        while (picks.len() as u64) < impostor_budget {
            let a = rng.random_range(0..lab.len());
            let b = rng.random_range(0..lab.len());
            if lab[a] != lab[b] {
                picks.push((a, b));
            }
        }
        let impostor: Vec<f64> = picks.par_iter().map(|&(a, b)| dot(a, b)).collect();
        let sel = format!(
            "{} of {genuine_total} genuine pairs, {} of {impostor_total} impostor pairs drawn uniformly (ChaCha8, seed {})",
            genuine.len(),
            impostor.len(),
            opts.seed
        );
        (genuine, impostor, sel)
    };
    let mut scores = genuine.clone();
    scores.extend_from_slice(&impostor);
    let mut truth = vec![true; genuine.len()];
    truth.resize(scores.len(), false);
    let roc = metrics::roc_curve(&scores, &truth)?;
    let tar = metrics::tar_at_far(&roc, impostor.len() as u64, &metrics::FAR_TARGETS);
    let auc = metrics::auc(&roc);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    Ok(AllPairsReport {
        pairs: PairCounts {
            faces: lab.len(),
            identities: per_class.len(),
            genuine: genuine.len() as u64,
            impostor: impostor.len() as u64,
            genuine_total,
            impostor_total,
            selection,
        },
        tar_at_far: tar,
        auc,
        genuine_mean: mean(&genuine),
        impostor_mean: mean(&impostor),
        roc: metrics::drop_collinear(&roc, genuine.len() as u64, impostor.len() as u64),
    })
}

/// Writes the ROC as CSV (`far,tar,threshold`) and as a PNG chart with a logarithmic FAR axis.
pub fn write_roc(report: &AllPairsReport, csv: &Path, png: &Path, title: &str) -> Result<()> {
    let mut f = facekit_io::durable::AtomicFile::create(csv)?;
    writeln!(f, "far,tar,threshold")?;
    for p in &report.roc {
        writeln!(f, "{},{},{}", p.far, p.tar, p.threshold)?;
    }
    f.commit()?;
    let points: Vec<(f64, f64)> = report.roc.iter().map(|p| (p.far, p.tar)).collect();
    crate::plot::line_chart(
        png,
        &crate::plot::ChartSpec {
            title,
            x_label: "FAR (false accept rate)",
            y_label: "TAR (true accept rate)",
            log_x: true,
        },
        &[crate::plot::Series { name: "ROC", points: &points, faint: false }],
    )
}
