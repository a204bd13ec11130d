//! Validation on the `--valid-sets`: identity accuracy (ArcFace logits without margin) and
//! verification accuracy on deterministic pairs for FR, accuracy beside the majority-class
//! baseline for gender, mean absolute error in years for age.

use super::metrics::{self, Pair};
use crate::loss::{expected_age, normalize, FaceLoss};
use crate::model::FaceNet;
use crate::run::numerics::Numerics;
use anyhow::Result;
use facekit_data::Loader;
use std::collections::BTreeMap;
use tch::{Device, Kind, Tensor};

/// Same-class and different-class pairs drawn for verification accuracy (each).
pub(crate) const VERIFICATION_PAIRS: usize = 3000;
/// Seed of the verification pairs; fixed so every validation of every run scores the same pairs.
const PAIR_SEED: u64 = 0x5eed_fa11;

/// A run's main validation metric: which one, and whether larger is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MainMetric {
    /// Key in [`Validation::metrics`].
    pub name: &'static str,
    /// True for accuracies, false for errors.
    pub higher_is_better: bool,
}

/// The results of one validation pass.
#[derive(Debug, Clone, PartialEq)]
pub struct Validation {
    /// Metric name -> value (accuracies in [0, 1], MAE in years).
    pub metrics: BTreeMap<String, f64>,
    /// Images scored.
    pub images: u64,
    /// Corrupt records skipped (with `--skip-corrupt`).
    pub skipped_corrupt: u64,
}

/// What a validation pass ended with.
#[derive(Debug, Clone, PartialEq)]
pub enum Validated {
    /// Every batch was scored.
    Done(Validation),
    /// A stop was requested (here or on another rank) before the last batch: no figures.
    Stopped,
    /// The network's embeddings are NaN or infinite (here or on another rank): no figure
    /// could mean anything; what was seen, for the message.
    NonFinite(String),
}

/// What the caller decides after each validation batch ([`validate`]'s `gate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Score the next batch.
    Go,
    /// Stop now: a stop was requested.
    Stop,
    /// Stop now: embeddings are not finite (on some rank).
    NonFinite,
}

/// The metric that picks the best checkpoint for each task: verification accuracy for FR (it
/// does not need the validation identities to be training identities), gender accuracy, age MAE.
pub(crate) fn main_metric(task: crate::model::Task) -> MainMetric {
    use crate::model::Task;
    match task {
        Task::Fr | Task::Multi => MainMetric { name: "verification_accuracy", higher_is_better: true },
        Task::Gender => MainMetric { name: "gender_accuracy", higher_is_better: true },
        Task::Age => MainMetric { name: "age_mae", higher_is_better: false },
    }
}

/// Scores the network on every batch of `loader` (built without shuffle, flip or drop_last), in
/// the run's precision and memory format. After each batch's forward pass `gate` is told whether
/// any of its embeddings is NaN or infinite and answers whether to go on: the caller agrees with
/// the other ranks there (every rank must leave at the same batch, since a sharded head's
/// prediction is a collective) and reads its stop flag, so a stop request never waits for a whole
/// validation set and a broken network is an error instead of a figure.
pub fn validate(
    net: &FaceNet,
    loss: &FaceLoss,
    loader: &Loader,
    numerics: &Numerics,
    train_classes: i64,
    gate: &mut dyn FnMut(bool) -> Result<Gate>,
) -> Result<Validated> {
    let (mut embeddings, mut classes, mut id_pred) = (Vec::<Tensor>::new(), Vec::<i64>::new(), Vec::<i64>::new());
    // Every image's own class id, seen or not in training: verification pairs need only sameness.
    let mut pair_classes = Vec::<i64>::new();
    let (mut genders, mut gender_pred) = (Vec::<i64>::new(), Vec::<i64>::new());
    let (mut ages, mut age_pred) = (Vec::<i64>::new(), Vec::<f64>::new());
    let mut it = loader.epoch(0, 0);
    let mut images = 0u64;
    let mut feed = super::feed::for_device(numerics, loader.config().batch_size, loader.config().image_size)?;
    let ended = tch::no_grad(|| -> Result<Option<Validated>> {
        for (b, batch) in it.by_ref().enumerate() {
            let batch = batch?;
            images += batch.n as u64;
            let (xs, _) = feed.input(&batch)?;
            let out = numerics.forward(net, &xs, false)?;
            let bad = out.embedding.isfinite().all_dim(1, false).logical_not().sum(Kind::Int64).int64_value(&[]);
            match gate(bad > 0)? {
                Gate::Go => {}
                Gate::Stop => return Ok(Some(Validated::Stopped)),
                Gate::NonFinite if bad > 0 => {
                    let what = format!(
                        "the embeddings of {bad} of the {} images of validation batch {b} are NaN or infinite",
                        batch.n
                    );
                    return Ok(Some(Validated::NonFinite(what)));
                }
                Gate::NonFinite => {
                    return Ok(Some(Validated::NonFinite(
                        "another rank's validation embeddings are NaN or infinite".into(),
                    )))
                }
            }
            let predicted = match (loss.arcface.as_ref(), loss.partial.as_ref()) {
                (Some(arc), _) => Some(arc.logits_no_margin(&out.embedding).argmax(1, false)),
                // A sharded head: the argmax over every rank's centres (a collective).
                (None, Some(p)) => Some(p.predict_classes(&out.embedding)?),
                (None, None) => None,
            };
            if let Some(predicted) = predicted {
                embeddings.push(normalize(&out.embedding.to_kind(Kind::Float)).to_device(Device::Cpu));
                id_pred.extend(to_i64(&predicted));
                // Identities the network never trained on cannot be classified: unknown here.
                classes.extend(batch.class.iter().map(|&c| if c < train_classes { c } else { -1 }));
                pair_classes.extend(&batch.class);
            }
            if let Some(g) = out.gender_logits.as_ref() {
                gender_pred.extend(to_i64(&g.argmax(1, false)));
                genders.extend(&batch.gender);
            }
            if let Some(a) = out.age_logits.as_ref() {
                age_pred.extend(Vec::<f64>::try_from(expected_age(a).to_kind(Kind::Double).to_device(Device::Cpu))?);
                ages.extend(&batch.age);
            }
            feed.retire(vec![batch])?;
        }
        Ok(None)
    })?;
    if let Some(ended) = ended {
        return Ok(ended);
    }
    let mut m = BTreeMap::new();
    if !embeddings.is_empty() {
        if let Some(a) = metrics::accuracy(&id_pred, &classes) {
            m.insert("identity_accuracy".into(), a);
        }
        let emb = Tensor::cat(&embeddings, 0);
        let pairs = metrics::verification_pairs(&pair_classes, VERIFICATION_PAIRS, PAIR_SEED);
        if let Some((acc, thr)) = verification(&emb, &pairs)? {
            m.insert("verification_accuracy".into(), acc);
            m.insert("verification_threshold".into(), thr);
        }
    }
    if let Some(a) = metrics::accuracy(&gender_pred, &genders) {
        m.insert("gender_accuracy".into(), a);
        if let Some(b) = metrics::majority_baseline(&genders) {
            m.insert("gender_majority_baseline".into(), b);
        }
    }
    if let Some(e) = metrics::mean_absolute_error(&age_pred, &ages) {
        m.insert("age_mae".into(), e);
    }
    Ok(Validated::Done(Validation { metrics: m, images, skipped_corrupt: it.stats().corrupt_skipped }))
}

/// Best-threshold accuracy of cosine similarity over `pairs` of L2-normalised `emb` rows; `None`
/// without pairs.
fn verification(emb: &Tensor, pairs: &[Pair]) -> Result<Option<(f64, f64)>> {
    if pairs.is_empty() {
        return Ok(None);
    }
    let a = Tensor::from_slice(&pairs.iter().map(|p| p.a as i64).collect::<Vec<_>>());
    let b = Tensor::from_slice(&pairs.iter().map(|p| p.b as i64).collect::<Vec<_>>());
    let cos = (emb.index_select(0, &a) * emb.index_select(0, &b)).sum_dim_intlist(1, false, Kind::Double);
    let scores = Vec::<f64>::try_from(cos)?;
    let same: Vec<bool> = pairs.iter().map(|p| p.same).collect();
    metrics::best_threshold_accuracy(&scores, &same)
}

fn to_i64(t: &Tensor) -> Vec<i64> {
    Vec::<i64>::try_from(t.to_kind(Kind::Int64).to_device(Device::Cpu)).unwrap_or_default()
}
