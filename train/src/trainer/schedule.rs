//! Learning-rate schedules: dlib's plateau rule, steps, cosine, polynomial decay, and linear
//! warm-up around any of them.
//!
//! Every schedule follows one protocol: [`Schedule::lr`] is the rate for the next optimiser
//! step; after that step, [`Schedule::observe`] takes its loss and returns the [`Decision`] for
//! the step after. All state is serde-serialisable so a checkpoint resumes the exact schedule
//! (for [`DlibPlateau`], its loss history).
//!
//! [`DlibPlateau`] is a port of dlib 19.24 (`/usr/include/dlib`):
//! - [`RunningGradient`] ports `running_gradient` (`dlib/statistics/running_gradient.h`): a
//!   recursive least-squares line fit whose slope's normal approximation gives P(slope > 0);
//! - [`count_steps_without_decrease`] and [`count_steps_without_decrease_robust`] port the
//!   functions of the same name in that header (robust: the upper 10% of values is discarded
//!   first, `find_upper_quantile`). Tests check them against dlib's own Python bindings;
//! - [`DlibPlateau::observe`] ports `dnn_trainer` (`dlib/dnn/trainer.h`): `record_loss` appends the
//!   loss to `previous_loss_values`, drops the oldest beyond `iter_without_progress_thresh`
//!   (default 2000) and adds 200 to `gradient_check_budget`; in `thread()`, once the budget
//!   exceeds the threshold it is reset and, if both counters reach the threshold, the rate is
//!   multiplied by `learning_rate_shrink` (0.1) and `drop_some_previous_loss_values` removes the
//!   `previous_loss_values_dump_amount` (400) + threshold/10 oldest losses. Training stops once
//!   the rate falls below `min_learning_rate` (1e-5), as `dnn_trainer::train` loops
//!   `while learning_rate >= min_learning_rate`.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// dlib's default `probability_of_decrease` in both counters.
pub const PROBABILITY_OF_DECREASE: f64 = 0.51;
/// dlib's default upper quantile ignored by the robust counter.
pub const QUANTILE_DISCARD: f64 = 0.10;

/// Recursive least-squares fit of a line through (0, y0), (1, y1), ... (dlib's `running_gradient`).
///
/// The operations follow dlib's order so results agree to the last bit in practice.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RunningGradient {
    n: f64,
    r: [[f64; 2]; 2],
    w: [f64; 2],
    residual_squared: f64,
}

impl Default for RunningGradient {
    fn default() -> Self {
        RunningGradient { n: 0.0, r: [[1e6, 0.0], [0.0, 1e6]], w: [0.0, 0.0], residual_squared: 0.0 }
    }
}

impl RunningGradient {
    /// Number of values added.
    pub(crate) fn current_n(&self) -> f64 {
        self.n
    }

    /// Adds the next value of the series.
    pub fn add(&mut self, y: f64) {
        let x = [self.n, 1.0];
        let r = self.r;
        let xtr = [x[0] * r[0][0] + x[1] * r[1][0], x[0] * r[0][1] + x[1] * r[1][1]];
        let temp = 1.0 + (xtr[0] * x[0] + xtr[1] * x[1]);
        let tmp = [r[0][0] * x[0] + r[0][1] * x[1], r[1][0] * x[0] + r[1][1] * x[1]];
        let mut r2 = [[0.0; 2]; 2];
        for i in 0..2 {
            for j in 0..2 {
                r2[i][j] = r[i][j] - (tmp[i] * tmp[j]) / temp;
            }
        }
        // dlib re-symmetrises R after every update for numerical stability.
        let mut rs = [[0.0; 2]; 2];
        for i in 0..2 {
            for j in 0..2 {
                rs[i][j] = 0.5 * (r2[i][j] + r2[j][i]);
            }
        }
        self.r = rs;
        let rx = [rs[0][0] * x[0] + rs[0][1] * x[1], rs[1][0] * x[0] + rs[1][1] * x[1]];
        let err = y - (x[0] * self.w[0] + x[1] * self.w[1]);
        self.w = [self.w[0] + rx[0] * err, self.w[1] + rx[1] * err];
        let resid = y - (x[0] * self.w[0] + x[1] * self.w[1]);
        self.residual_squared += resid * resid * temp;
        self.n += 1.0;
    }

    /// Slope of the fitted line (needs at least 2 values).
    pub fn gradient(&self) -> f64 {
        self.w[0]
    }

    /// Standard error of the slope (needs at least 3 values).
    pub(crate) fn standard_error(&self) -> f64 {
        let s = self.residual_squared / (self.n - 2.0);
        let adjust = 12.0 / (self.n.powi(3) - self.n);
        (s * adjust).sqrt()
    }

    /// P(true slope > thresh) under the normal approximation (needs at least 3 values).
    pub(crate) fn probability_gradient_greater_than(&self, thresh: f64) -> f64 {
        1.0 - normal_cdf(thresh, self.gradient(), self.standard_error())
    }
}

fn normal_cdf(value: f64, mean: f64, stddev: f64) -> f64 {
    if stddev == 0.0 {
        return if value < mean {
            0.0
        } else if value > mean {
            1.0
        } else {
            0.5
        };
    }
    let v = (value - mean) / stddev;
    0.5 * libm::erfc(-v / 2f64.sqrt())
}

/// How many of the most recent values show no confident decrease (dlib's
/// `count_steps_without_decrease`, `running_gradient.h`): walking backwards from the newest value,
/// the largest j such that the last j values' fitted slope is not < 0 with probability `p`.
pub fn count_steps_without_decrease(values: &[f64], probability_of_decrease: f64) -> usize {
    count_backwards(values, probability_of_decrease, f64::INFINITY)
}

/// As [`count_steps_without_decrease`] but ignoring values above the upper `quantile_discard`
/// quantile, so a few bad mini-batches cannot fake a plateau (dlib's
/// `count_steps_without_decrease_robust`).
pub fn count_steps_without_decrease_robust(
    values: &[f64],
    probability_of_decrease: f64,
    quantile_discard: f64,
) -> usize {
    if values.is_empty() {
        return 0;
    }
    count_backwards(values, probability_of_decrease, find_upper_quantile(values, quantile_discard))
}

/// The value at sorted position round((n−1)(1−q)) (dlib's `find_upper_quantile`, via nth_element).
pub(crate) fn find_upper_quantile(values: &[f64], quantile: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    // f64::round rounds halves away from zero, as std::round does.
    let idx = ((sorted.len() - 1) as f64 * (1.0 - quantile)).round() as usize;
    sorted[idx]
}

fn count_backwards(values: &[f64], probability_of_decrease: f64, keep_at_most: f64) -> usize {
    let mut g = RunningGradient::default();
    let mut count = 0;
    for (j, &v) in values.iter().rev().enumerate() {
        if v <= keep_at_most {
            g.add(v);
        }
        if g.current_n() > 2.0 {
            // Going backwards, a positive slope means the loss was decreasing over time.
            let prob_decreasing = g.probability_gradient_greater_than(0.0);
            if prob_decreasing < probability_of_decrease {
                count = j + 1;
            }
        }
    }
    count
}

/// What a schedule decided after observing a step's loss.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    /// Learning rate for the next step.
    pub lr: f64,
    /// Whether the rate was just shrunk (plateau detected).
    pub shrunk: bool,
    /// Whether training should stop (the plateau rate fell below its minimum).
    pub stop: bool,
}

/// dlib's `dnn_trainer` learning-rate rule: shrink when the training loss stops decreasing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DlibPlateau {
    /// Steps without progress before shrinking (dlib `iterations_without_progress_threshold`).
    pub threshold: usize,
    /// Factor applied to the rate on a plateau (dlib `learning_rate_shrink_factor`).
    pub shrink: f64,
    /// Training stops once the rate is below this (dlib `min_learning_rate`).
    pub min_lr: f64,
    /// The last `threshold` losses, oldest first (dlib `previous_loss_values`).
    pub history: VecDeque<f64>,
    /// Current learning rate.
    pub lr: f64,
    /// Budget that rations the O(history) plateau check (dlib `gradient_check_budget`).
    pub check_budget: u64,
    /// Losses dropped after a shrink besides threshold/10 (dlib `previous_loss_values_dump_amount`).
    pub dump_amount: usize,
    /// Result of the last plateau check, for display (dlib `steps_without_progress`).
    pub steps_without_progress: usize,
}

impl DlibPlateau {
    /// dlib's defaults (threshold 2000, shrink 0.1, min 1e-5, dump 400) starting at `lr`.
    pub fn new(lr: f64) -> Self {
        DlibPlateau {
            threshold: 2000,
            shrink: 0.1,
            min_lr: 1e-5,
            history: VecDeque::new(),
            lr,
            check_budget: 0,
            dump_amount: 400,
            steps_without_progress: 0,
        }
    }

    /// Records one training step's loss and applies dlib's shrink rule.
    pub fn observe(&mut self, loss: f64) -> Decision {
        // trainer.h record_loss()
        self.check_budget += 200;
        self.history.push_back(loss);
        while self.history.len() > self.threshold {
            self.history.pop_front();
        }
        // trainer.h thread(), after the parameter update
        let mut shrunk = false;
        if self.check_budget > self.threshold as u64 && self.shrink != 1.0 {
            self.check_budget = 0;
            let h = self.history.make_contiguous();
            self.steps_without_progress = count_steps_without_decrease(h, PROBABILITY_OF_DECREASE);
            if self.steps_without_progress >= self.threshold {
                self.steps_without_progress =
                    count_steps_without_decrease_robust(h, PROBABILITY_OF_DECREASE, QUANTILE_DISCARD);
                if self.steps_without_progress >= self.threshold {
                    self.lr *= self.shrink;
                    self.steps_without_progress = 0;
                    shrunk = true;
                    // trainer.h drop_some_previous_loss_values()
                    let drop = (self.dump_amount + self.threshold / 10).min(self.history.len());
                    self.history.drain(..drop);
                }
            }
        }
        Decision { lr: self.lr, shrunk, stop: self.lr < self.min_lr }
    }
}

/// Multiply the rate by `gamma` at each milestone step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepSchedule {
    /// Rate before the first milestone.
    pub base_lr: f64,
    /// Factor applied at each milestone.
    pub gamma: f64,
    /// Step indices (0-based, counting observed steps) from which the next factor applies.
    pub milestones: Vec<u64>,
    /// Steps observed so far.
    pub step: u64,
}

impl StepSchedule {
    fn lr(&self) -> f64 {
        let passed = self.milestones.iter().filter(|&&m| m <= self.step).count();
        self.base_lr * self.gamma.powi(passed as i32)
    }
}

/// Half-cosine decay from `base_lr` to `floor` over `steps` steps, then constant at `floor`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cosine {
    /// Rate at step 0.
    pub base_lr: f64,
    /// Rate reached at `steps` and kept afterwards.
    pub floor: f64,
    /// Length of the decay.
    pub steps: u64,
    /// Steps observed so far.
    pub step: u64,
}

impl Cosine {
    fn lr(&self) -> f64 {
        if self.steps == 0 {
            return self.floor;
        }
        let t = self.step.min(self.steps) as f64 / self.steps as f64;
        self.floor + (self.base_lr - self.floor) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
    }
}

/// Polynomial decay `base_lr·(1 − j/steps)^power` at step j, reaching 0 at `steps` and staying
/// there: arcface_torch's `PolynomialLRWarmup._get_closed_form_lr` after its warm-up (there
/// j = iteration − warm-up and steps = total − warm-up; see docs/TRAINING.md for the warm-up).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Poly {
    /// Rate at step 0.
    pub base_lr: f64,
    /// Exponent of the decay (1: linear).
    pub power: f64,
    /// Length of the decay.
    pub steps: u64,
    /// Steps observed so far.
    pub step: u64,
}

impl Poly {
    fn lr(&self) -> f64 {
        if self.steps == 0 {
            return 0.0;
        }
        let done = self.step.min(self.steps) as f64 / self.steps as f64;
        self.base_lr * (1.0 - done).powf(self.power)
    }
}

/// Linear ramp to the wrapped schedule's rate over `steps` steps; the wrapped schedule is frozen
/// (sees no step and no loss) until the ramp ends, so a cosine still decays over its full length.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Warmup {
    /// Length of the ramp.
    pub steps: u64,
    /// Steps observed so far during the ramp.
    pub step: u64,
    /// The schedule that takes over after the ramp.
    pub inner: Box<Schedule>,
}

/// Any learning-rate schedule, with its state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Schedule {
    /// dlib's shrink-on-plateau rule.
    Plateau(DlibPlateau),
    /// Fixed milestones.
    Step(StepSchedule),
    /// Cosine decay to a floor.
    Cosine(Cosine),
    /// Polynomial decay to zero.
    Poly(Poly),
    /// Linear warm-up around another schedule.
    Warmup(Warmup),
}

impl Schedule {
    /// The learning rate for the next optimiser step.
    pub fn lr(&self) -> f64 {
        match self {
            Schedule::Plateau(p) => p.lr,
            Schedule::Step(s) => s.lr(),
            Schedule::Cosine(c) => c.lr(),
            Schedule::Poly(p) => p.lr(),
            Schedule::Warmup(w) if w.step < w.steps => w.inner.lr() * (w.step + 1) as f64 / w.steps as f64,
            Schedule::Warmup(w) => w.inner.lr(),
        }
    }

    /// Records the loss of the step just taken and decides the next rate.
    pub fn observe(&mut self, loss: f64) -> Decision {
        match self {
            Schedule::Plateau(p) => return p.observe(loss),
            Schedule::Step(s) => s.step += 1,
            Schedule::Cosine(c) => c.step += 1,
            Schedule::Poly(p) => p.step += 1,
            Schedule::Warmup(w) if w.step < w.steps => w.step += 1,
            Schedule::Warmup(w) => return w.inner.observe(loss),
        }
        Decision { lr: self.lr(), shrunk: false, stop: false }
    }

    /// Whether [`Self::observe`]'s next call needs the loss (dlib's plateau rule, also after a
    /// warm-up): the loop then passes it when it reads the losses back, in step order; the
    /// others move on at each step without it.
    pub(crate) fn needs_loss(&self) -> bool {
        match self {
            Schedule::Plateau(_) => true,
            Schedule::Warmup(w) => w.step >= w.steps && w.inner.needs_loss(),
            _ => false,
        }
    }

    /// Whether this schedule has ended the run: a plateau schedule whose rate fell below its
    /// minimum (the others end with the step limit).
    pub fn stopped(&self) -> bool {
        match self {
            Schedule::Plateau(p) => p.lr < p.min_lr,
            Schedule::Warmup(w) => w.step >= w.steps && w.inner.stopped(),
            _ => false,
        }
    }

    /// This schedule (built for the run's present length) at the progress `saved` reached: how a
    /// resume continues, so that a horizon (step milestones, cosine's and poly's decay) follows a
    /// `--max-steps` or `--epochs` given on resume, as a run planned for that length from the start
    /// would. A plateau schedule has no horizon: it is `saved` whole (its loss history), and so is
    /// any schedule of another kind than `saved`'s.
    pub fn resumed_from(self, saved: Schedule) -> Schedule {
        match (self, saved) {
            (Schedule::Step(p), Schedule::Step(s)) => Schedule::Step(StepSchedule { step: s.step, ..p }),
            (Schedule::Cosine(p), Schedule::Cosine(s)) => Schedule::Cosine(Cosine { step: s.step, ..p }),
            (Schedule::Poly(p), Schedule::Poly(s)) => Schedule::Poly(Poly { step: s.step, ..p }),
            (Schedule::Warmup(p), Schedule::Warmup(s)) => Schedule::Warmup(Warmup {
                steps: p.steps,
                step: s.step,
                inner: Box::new(p.inner.resumed_from(*s.inner)),
            }),
            (_, saved) => saved,
        }
    }

    /// Wraps this schedule in a linear warm-up of `steps` steps (no-op for 0).
    pub fn with_warmup(self, steps: u64) -> Schedule {
        if steps == 0 {
            return self;
        }
        Schedule::Warmup(Warmup { steps, step: 0, inner: Box::new(self) })
    }
}
