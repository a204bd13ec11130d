//! Verification on insightface `.bin` files during training (`--eval-bin`, what arcface_torch's
//! `CallBackVerification` does every 2,000 steps): each file is read and decoded once, at setup,
//! into a [`BinSet`] of network-sized chips; every `--eval-every` steps and at the end the network
//! being trained scores it in eval mode exactly as `facekit eval verify --bin --flip` scores a
//! checkpoint (10 consecutive folds, flip test, [`BinSet::score`]), in the run's precision.

use super::config::TrainConfig;
use super::state::BestMetric;
use crate::embedding::bins::BinSet;
use crate::events::{Event, Observer};
use crate::model::FaceNet;
use crate::run::numerics::Numerics;
use anyhow::{bail, Result};
use facekit_eval::metrics::KFoldReport;
use std::time::Instant;

/// Folds of the protocol (insightface's `nfolds`; LFW's 10 official folds of 600 pairs).
pub(crate) const FOLDS: usize = 10;

/// The decoded `--eval-bin` sets and how many images go through the network at once.
pub(crate) struct EvalBins {
    sets: Vec<BinSet>,
    batch_size: usize,
}

/// One set's result at one evaluation.
#[derive(Debug, Clone)]
pub struct BinScore {
    /// The set's name (file stem).
    pub name: String,
    /// The k-fold figures.
    pub report: KFoldReport,
    /// Wall time of the evaluation (embedding and folds), in seconds.
    pub seconds: f64,
}

impl EvalBins {
    /// Reads every `--eval-bin` file of `cfg` and decodes it for `--image-size`; `None` without
    /// `--eval-bin`. With `decode` false (a rank that does not evaluate) each file is only read
    /// and parsed, so that every rank refuses the same bad file. A missing, unreadable or
    /// malformed file, an image that does not decode, or a set of fewer than [`FOLDS`] pairs is
    /// an error naming the file.
    /// `events` hears of each set decoded.
    pub fn open(cfg: &TrainConfig, decode: bool, events: &Observer) -> Result<Option<EvalBins>> {
        if cfg.eval_bin.is_empty() {
            return Ok(None);
        }
        let mut sets = Vec::with_capacity(cfg.eval_bin.len());
        for path in &cfg.eval_bin {
            let pairs = if decode {
                let t = Instant::now();
                let set = BinSet::load(path, cfg.image_size)?;
                events.emit(Event::EvalBinDecoded {
                    name: &set.name,
                    pairs: set.pairs(),
                    images: set.images(),
                    size: set.size,
                    seconds: t.elapsed().as_secs_f64(),
                    bytes: set.pixels.len(),
                });
                let n = set.pairs();
                sets.push(set);
                n
            } else {
                facekit_eval::pickle::VerificationBin::read(path)?.issame.len()
            };
            if pairs < FOLDS {
                bail!(
                    "--eval-bin {}: {pairs} pairs, but {FOLDS}-fold verification needs at least {FOLDS}",
                    path.display()
                );
            }
        }
        Ok(decode.then_some(EvalBins { sets, batch_size: cfg.eval_batch_size() }))
    }

    /// Scores `net` on every set, in order; once `stop` is set the scoring ends at the next batch
    /// with [`crate::embedding::EmbedError::Stopped`], and NaN or infinite embeddings end it
    /// with [`crate::embedding::EmbedError::NonFinite`] (inside an error naming the file).
    pub fn score(&self, net: &FaceNet, numerics: &Numerics, stop: &facekit_io::StopFlag) -> Result<Vec<BinScore>> {
        self.sets
            .iter()
            .map(|set| {
                let t = Instant::now();
                let report = set.score(net, numerics, self.batch_size, true, FOLDS, stop)?;
                Ok(BinScore { name: set.name.clone(), report, seconds: t.elapsed().as_secs_f64() })
            })
            .collect()
    }
}

impl BinScore {
    /// Its `train_log.jsonl` record.
    pub fn event(&self, step: u64) -> serde_json::Value {
        let k = &self.report;
        serde_json::json!({
            "step": step,
            "eval_bin": {
                "set": self.name, "accuracy": k.accuracy_mean, "std": k.accuracy_std,
                "threshold": k.best_threshold, "threshold_cosine": k.best_threshold_cosine,
                "pairs": k.pairs, "folds": k.folds, "flip": true, "seconds": self.seconds,
            },
        })
    }

    /// This result as the run's best metric, reached at `step`.
    pub(crate) fn as_best(&self, step: u64) -> BestMetric {
        BestMetric {
            name: best_metric_name(&self.name),
            value: self.report.accuracy_mean,
            higher_is_better: true,
            step,
        }
    }
}

/// The best metric's name for `--best-on SET`: `SET_accuracy` (`lfw_accuracy`).
pub(crate) fn best_metric_name(set: &str) -> String {
    format!("{set}_accuracy")
}
