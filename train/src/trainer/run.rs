//! The training loop as named steps (burn's `Learner` shape): [`Trainer::run`] reads on one
//! screen, and each step is a method here or in [`super::step`].

use super::checkpoint;
use super::config::TrainConfig;
use super::eval_bins::EvalBins;
use super::host_reads::HostReads;
use super::labels::LabelGuard;
use super::logs::{RunLogs, StepLosses};
use super::meter::Meter;
use super::optim::Optimizer;
use super::pending::{Pending, ReadStep};
use super::replicas::Replicas;
use super::run_dir::RunDir;
use super::scaler::GradScaler;
use super::schedule::Schedule;
use super::state::{BestMetric, ScalerState, TrainState};
use super::validate::{self, Gate, Validated};
use crate::embedding::EmbedError;
use crate::events::{Event, Observer};
use crate::loss::FaceLoss;
use crate::model::health::weights_problem;
use crate::model::{FaceNet, NetConfig};
use crate::run::numerics::Numerics;
use crate::run::paths::{BEST, LAST};
use anyhow::Result;
use facekit_data::{Batch, EpochIter, Loader};
use facekit_io::StopFlag;
use std::path::PathBuf;
use std::time::Instant;
use tch::nn::VarStore;

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The step/epoch limit or the schedule's stop rule was reached.
    Finished(Summary),
    /// Stopped by a signal (Ctrl-C, SIGTERM) or request: the current step was finished and
    /// `last` written.
    Interrupted(Summary),
    /// The loss, or the network's embeddings in validation or `--eval-bin` scoring, became NaN or
    /// infinite at `step`; `last` holds the last good checkpoint.
    Diverged {
        /// The step that diverged: not applied (a NaN loss) or not saved (NaN embeddings).
        step: u64,
        /// What became NaN or infinite, where, and why when that is known (`the loss became NaN
        /// or infinite`, `validation: the embeddings of ... (`bn1.running_var` holds ...)`).
        cause: String,
        /// Where the run stands.
        summary: Summary,
    },
    /// `--resume` of a run that had nothing left to train: nothing was done or written.
    NothingLeft {
        /// Why (the step limit was reached, or the plateau schedule's end), and how to train on.
        reason: String,
        /// Where the run stands.
        summary: Summary,
    },
    /// A corrupt record stopped the run (without `--skip-corrupt`); the message names it.
    CorruptData {
        /// What is corrupt, where.
        message: String,
        /// Where the run stands.
        summary: Summary,
    },
}

/// What the end-of-run summary reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// The run's folder.
    pub run_dir: PathBuf,
    /// Steps completed (across resumes).
    pub steps: u64,
    /// Loss of the last completed step.
    pub final_loss: Option<f64>,
    /// Best validation metric.
    pub best: Option<BestMetric>,
    /// Mean training throughput of the run, all ranks together (images per second, data wait
    /// included, validation and `--eval-bin` scoring not).
    pub images_per_second: f64,
    /// Mean time a step waited for its batch, in milliseconds.
    pub mean_data_wait_ms: f64,
    /// Corrupt records skipped in training (across resumes) and in validation.
    pub skipped_corrupt: u64,
    /// The fp16 loss scaler at the end (scale, skipped steps); `None` without loss scaling.
    pub loss_scaling: Option<ScalerState>,
    /// Step of the `last` checkpoint on disk, if one was written (or resumed from).
    pub last_checkpoint: Option<u64>,
    /// Whether a `best` checkpoint exists.
    pub has_best: bool,
}

/// A run being trained: the model, its optimiser and schedule, the data, and the run folder.
pub struct Trainer {
    pub(super) cfg: TrainConfig,
    pub(super) run: RunDir,
    pub(super) net_cfg: NetConfig,
    pub(super) vs: VarStore,
    pub(super) net: FaceNet,
    pub(super) loss: FaceLoss,
    pub(super) opt: Box<dyn Optimizer>,
    pub(super) numerics: Numerics,
    /// The batches onto the device (see [`super::feed`]).
    pub(super) feed: Box<dyn super::feed::Input>,
    /// fp16 dynamic loss scaling; `None` in fp32 and bf16.
    pub(super) scaler: Option<GradScaler>,
    pub(super) schedule: Schedule,
    /// Where the run stands: what a checkpoint saves.
    pub(super) state: TrainState,
    pub(super) loader: Loader,
    pub(super) valid: Option<Loader>,
    /// The `--eval-bin` sets, decoded (rank 0 only).
    pub(super) bins: Option<EvalBins>,
    /// The run's logs, kept by rank 0 alone.
    pub(super) logs: Option<RunLogs>,
    pub(super) meter: Meter,
    pub(super) guard: LabelGuard,
    pub(super) stop: StopFlag,
    /// A stop was agreed during validation (asked here or on another rank): the step ends the run.
    pub(super) stopping: bool,
    /// Set when a resumed run has nothing left to train: why, and how to train it further.
    pub(super) nothing_left: Option<String>,
    pub(super) replicas: Box<dyn Replicas>,
    /// The variables each rank holds only some rows of (Partial FC), gathered for checkpoints.
    pub(super) shards: Option<Box<dyn checkpoint::Shards>>,
    /// The caller's receiver of what the run has to say.
    pub(super) events: Observer,
    pub(super) max_steps: Option<u64>,
    /// Micro-batches per epoch that make whole steps (a multiple of `--accumulate`).
    pub(super) batches_per_epoch: u64,
    /// Fault injection for tests ([`Trainer::with_nan_loss_at_step`]).
    pub(super) inject_nan: Option<u64>,
    pub(super) last_checkpoint: Option<u64>,
    pub(super) seconds_before: f64,
    pub(super) final_loss: Option<f64>,
    /// The network's gradient norm before clipping in the last step read (with --clip-grad-norm).
    pub(super) grad_norm: Option<f64>,
    /// The losses of the last step read.
    pub(super) last_losses: Option<StepLosses>,
    /// The steps whose values are still on the device.
    pub(super) pending: Pending,
    /// The counted door of every device-to-host read of the loop.
    pub(super) host_reads: HostReads,
    /// Steps between read points: rank 0's `--log-every` (at least 1), the same on every rank
    /// (`--log-every` may differ from rank to rank; each read is a collective).
    pub(super) read_every: u64,
    pub(super) valid_skipped: u64,
    /// Forward passes in training mode (batch statistics, dropout); the tests turn it off to
    /// compare accumulated micro-batches with one large batch exactly.
    pub(super) train_mode: bool,
}

/// What the loop does after a step.
enum After {
    /// Go on with the next batch of this epoch.
    Continue,
    /// This epoch is complete: the next batch starts the next one.
    NextEpoch,
    /// The run ends.
    End(End),
}

/// Why a run ends.
pub(super) enum End {
    Finished,
    Interrupted,
    Diverged { step: u64, cause: String },
    Corrupt(String),
    NothingLeft(String),
}

impl Trainer {
    /// Trains until the step limit, the schedule's stop rule, a stop request, a divergence or a
    /// corrupt record, and says which.
    pub fn run(mut self) -> Result<Outcome> {
        if let Some(reason) = self.nothing_left.take() {
            return self.end(End::NothingLeft(reason));
        }
        self.read_every = self.rank0_log_every()?;
        while !self.at_step_limit() {
            let mut epoch = self.loader.epoch(self.state.epoch, self.state.batch_in_epoch);
            loop {
                let next = self.next_micro_batches(&mut epoch);
                // A corrupt record in one rank's share ends the run on every rank, agreed first so
                // that none waits alone in the next collective.
                if self.replicas.agree_any(next.is_err())? {
                    let message = next.err().unwrap_or_else(|| {
                        "another rank stopped on a corrupt record (its own message names it)".into()
                    });
                    return self.end(End::Corrupt(message));
                }
                let Some((micro, wait_s)) = next.expect("agreed above") else {
                    self.next_epoch();
                    break;
                };
                let stepped = self.step(&micro);
                self.feed.end_step()?;
                stepped?;
                self.meter.step(micro.iter().map(|b| b.n).sum(), wait_s);
                if self.read_due() {
                    if let Some(end) = self.read_back()? {
                        return self.end(end);
                    }
                }
                self.log()?;
                let at_end = self.schedule.stopped() || self.at_step_limit();
                for batch in &micro {
                    self.guard.observe(batch, at_end)?;
                }
                self.feed.retire(micro)?;
                if let Some(end) = self.validate(at_end)? {
                    return self.end(end);
                }
                if let Some(end) = self.evaluate_bins(at_end)? {
                    return self.end(end);
                }
                match self.checkpoint(at_end)? {
                    After::Continue => {}
                    After::NextEpoch => break,
                    After::End(end) => return self.end(end),
                }
            }
        }
        self.end(End::Finished)
    }

    fn at_step_limit(&self) -> bool {
        self.max_steps.is_some_and(|m| self.state.step >= m)
    }

    /// The counter of this run's device-to-host reads (shared: it keeps counting while the run
    /// goes on), for tests that check when the loop waits for the device.
    pub fn host_reads(&self) -> HostReads {
        self.host_reads.clone()
    }

    /// Fault injection for tests, which the command line does not offer: the loss of step `step`
    /// (counted across resumes, from 1) and so every gradient of it become NaN, as in a real
    /// divergence, so that the divergence handling (the step not applied, the run ended with
    /// [`Outcome::Diverged`], `last` the last good checkpoint) is exercised end to end.
    pub fn with_nan_loss_at_step(mut self, step: u64) -> Self {
        self.inject_nan = Some(step);
        self
    }

    /// Rank 0's `--log-every` (at least 1) on every rank: the mean of it and the other ranks'
    /// zeros, times the number of ranks (exact for any integer below 2^53).
    fn rank0_log_every(&mut self) -> Result<u64> {
        let own = if self.replicas.rank() == 0 { self.cfg.log_every as f64 } else { 0.0 };
        let mean = self.replicas.mean(&[own])?;
        Ok(((mean[0] * self.replicas.world_size() as f64).round() as u64).max(1))
    }

    /// Whether the values of the steps so far are read back now: every `--log-every` steps of
    /// rank 0 (every step with 0), at the step limit, before validation and `--eval-bin` scoring
    /// (checkpoints read in [`Self::checkpoint`]). The same on every rank: each read is a
    /// collective.
    fn read_due(&self) -> bool {
        let step = self.state.step;
        let at = |every: u64| every > 0 && step.is_multiple_of(every);
        step.is_multiple_of(self.read_every)
            || self.at_step_limit()
            || (self.valid.is_some() && at(self.cfg.valid_every))
            || (!self.cfg.eval_bin.is_empty() && at(self.cfg.eval_every))
    }

    /// Reads the pending steps back (one read, see [`Pending::read`]) and takes them in order:
    /// `losses.tsv`, the schedule's loss, the fp16 scaler's state; the first step whose loss (or,
    /// without loss scaling, gradients) was not finite ends the run as a divergence at that step
    /// (its update, and any later one's that was not finite, was not applied).
    pub(super) fn read_back(&mut self) -> Result<Option<End>> {
        if self.pending.is_empty() {
            return Ok(None);
        }
        let extra = self.scaler.as_ref().map(GradScaler::state_tensor);
        let (steps, rest) =
            self.pending.read(self.replicas.as_mut(), &self.host_reads, self.state.step, extra.as_ref())?;
        if self.scaler.is_some() {
            self.state.scaler = Some(ScalerState::from_values(&rest));
        }
        for s in &steps {
            if let Some(cause) = self.divergence(s) {
                return Ok(Some(End::Diverged { step: s.step, cause }));
            }
            self.take(s)?;
        }
        Ok(None)
    }

    /// Why the step `s` ends the run, if it does: its loss is not finite, or its gradients were
    /// not and no loss scaler owns that case (fp16 skips overflowing steps and goes on).
    fn divergence(&self, s: &ReadStep) -> Option<String> {
        if !s.losses.total.is_finite() {
            Some("the loss became NaN or infinite".into())
        } else if s.skipped && !self.numerics.needs_loss_scaling() {
            Some("the gradients became NaN or infinite".into())
        } else {
            None
        }
    }

    /// A step read back: logged in `losses.tsv`, its loss given to the schedule when it takes it.
    fn take(&mut self, s: &ReadStep) -> Result<()> {
        if let Some(logs) = self.logs.as_mut() {
            logs.step(s.step, s.epoch, s.lr, &s.losses)?;
        }
        self.final_loss = Some(s.losses.total);
        self.last_losses = Some(s.losses);
        self.grad_norm = s.grad_norm;
        if s.observe_loss && self.schedule.observe(s.losses.total).shrunk && self.logs.is_some() {
            self.events.emit(Event::LrShrunk { step: s.step, lr: self.schedule.lr() });
        }
        Ok(())
    }

    /// The `--accumulate` micro-batches of the next step and how long they took to arrive; `None`
    /// when the epoch has no whole step left; `Err` with the message when a corrupt record stops
    /// the run.
    pub(super) fn next_micro_batches(
        &mut self,
        epoch: &mut EpochIter,
    ) -> std::result::Result<Option<(Vec<Batch>, f64)>, String> {
        if self.state.batch_in_epoch >= self.batches_per_epoch {
            return Ok(None);
        }
        let mut micro = Vec::with_capacity(self.cfg.accumulate as usize);
        let mut wait_s = 0.0;
        while micro.len() < self.cfg.accumulate as usize {
            let Some((batch, w)) = self.next_batch(epoch)? else { return Ok(None) };
            micro.push(batch);
            wait_s += w;
        }
        Ok(Some((micro, wait_s)))
    }

    /// The next batch of the epoch and how long it took to arrive; `None` at the epoch's end;
    /// `Err` with the message when a corrupt record stops the run.
    fn next_batch(&mut self, epoch: &mut EpochIter) -> std::result::Result<Option<(Batch, f64)>, String> {
        if let Some(batch) = self.feed.synthetic_batch() {
            return Ok(Some((batch, 0.0)));
        }
        let t = Instant::now();
        let skipped_before = epoch.stats().corrupt_skipped;
        let batch = match epoch.next() {
            None => return Ok(None),
            Some(Ok(b)) => b,
            Some(Err(e)) => return Err(format!("{e:#}")),
        };
        let newly = epoch.stats().corrupt_skipped - skipped_before;
        for c in epoch.stats().corrupt.iter().rev().take(newly as usize) {
            self.events.emit(Event::SkippedCorrupt { error: &c.error });
        }
        self.state.skipped_corrupt += newly;
        Ok(Some((batch, t.elapsed().as_secs_f64())))
    }

    /// After an epoch's last batch: the position moves to the start of the next epoch.
    fn next_epoch(&mut self) {
        if self.state.batch_in_epoch != 0 {
            self.state.epoch += 1;
            self.state.batch_in_epoch = 0;
        }
    }

    /// Every `--log-every` steps (a read point: the step's values are on the host) a record in
    /// `train_log.jsonl` and an [`Event::Progress`] with the window's throughput and data wait,
    /// and where the run stands (step of the limit, the estimated time left); every step an
    /// [`Event::Stepped`]. `losses.tsv` is written as steps are read.
    fn log(&mut self) -> Result<()> {
        let (step, epoch) = (self.state.step, self.state.epoch);
        let Some(logs) = self.logs.as_mut() else { return Ok(()) };
        self.events.emit(Event::Stepped { step });
        let every = self.cfg.log_every;
        let Some(l) = self.last_losses.filter(|_| every > 0 && step % every == 0) else { return Ok(()) };
        let lr = self.state.lr;
        let w = self.meter.take_window();
        let (ips, wait_ms) = (w.images_per_second, w.data_wait_ms);
        let mut record = serde_json::json!({
            "step": step, "epoch": epoch, "lr": lr, "loss": l.total,
            "fr_loss": l.fr, "gender_loss": l.gender, "age_loss": l.age,
            "images_per_second": ips, "data_wait_ms": wait_ms,
        });
        let scaler = self.state.scaler.as_ref();
        if let Some(s) = scaler {
            record["loss_scale"] = s.scale.into();
            record["skipped_steps"] = s.skipped_steps.into();
        }
        if let Some(norm) = self.grad_norm {
            record["grad_norm"] = norm.into();
        }
        let eta = self.max_steps.and_then(|m| self.meter.eta_s(m.saturating_sub(step)));
        if let Some(eta) = eta {
            record["eta_seconds"] = eta.into();
        }
        logs.event(&record)?;
        self.events.emit(Event::Progress {
            step,
            max_steps: self.max_steps,
            epoch,
            loss: l.total,
            lr,
            // Every rank moves at the pace of the slowest: the run's throughput is this rank's
            // times the number of ranks.
            images_per_second: ips * self.replicas.world_size() as f64,
            data_wait_ms: wait_ms,
            scaler,
            grad_norm: self.grad_norm,
            eta_seconds: eta,
        });
        Ok(())
    }

    /// Every `--valid-every` steps and at the end: scores the validation sets, logs and draws the
    /// result, and writes `best` when the main metric improved. A stop request during validation
    /// ends it at once (the step's checkpoint then ends the run); NaN or infinite embeddings end
    /// the run as a divergence (what it returns).
    fn validate(&mut self, at_end: bool) -> Result<Option<End>> {
        let Some(loader) = &self.valid else { return Ok(None) };
        let every = self.cfg.valid_every;
        if self.stopping || !(at_end || (every > 0 && self.state.step.is_multiple_of(every))) {
            return Ok(None);
        }
        // Every rank scores the same network on the whole set (rank 0's batch-norm statistics), so
        // they reach the same result and the same decisions.
        self.replicas.sync_buffers(&self.vs)?;
        let started = Instant::now();
        let (replicas, stop) = (&mut self.replicas, &self.stop);
        // One collective per batch: every rank leaves at the same batch, whichever rank was asked
        // to stop or saw a NaN.
        let mut gate = |non_finite: bool| -> Result<Gate> {
            let any = replicas.mean(&[f64::from(u8::from(stop.is_set())), f64::from(u8::from(non_finite))])?;
            Ok(if any[1] > 0.0 {
                Gate::NonFinite
            } else if any[0] > 0.0 {
                Gate::Stop
            } else {
                Gate::Go
            })
        };
        let validated =
            validate::validate(&self.net, &self.loss, loader, &self.numerics, self.net_cfg.num_classes, &mut gate);
        self.meter.pause(started.elapsed());
        let v = match validated? {
            Validated::Done(v) => v,
            Validated::Stopped => {
                self.stopping = true;
                return Ok(None);
            }
            Validated::NonFinite(what) => return Ok(Some(self.broken_network(format!("validation: {what}")))),
        };
        let step = self.state.step;
        self.valid_skipped = v.skipped_corrupt;
        if let Some(logs) = self.logs.as_mut() {
            self.events.emit(Event::Validation { step, metrics: &v.metrics, images: v.images });
            logs.event(&serde_json::json!({ "step": step, "validation": v.metrics, "valid_images": v.images }))?;
            logs.draw()?;
        }
        if self.cfg.best_on.is_some() {
            return Ok(None);
        }
        let main = validate::main_metric(self.net_cfg.task);
        let Some(&value) = v.metrics.get(main.name) else { return Ok(None) };
        self.keep_if_best(Some(BestMetric {
            name: main.name.into(),
            value,
            higher_is_better: main.higher_is_better,
            step,
        }))?;
        Ok(None)
    }

    /// Every `--eval-every` steps and at the end, on rank 0: 10-fold verification with flip test
    /// on each `--eval-bin` set (as `eval verify --bin`); logs, prints and draws each result, and
    /// writes `best` when it is the `--best-on` set's and it improved. A stop request ends the
    /// scoring at the next batch (nothing is logged); NaN or infinite embeddings end the run as a
    /// divergence on every rank (what it returns).
    fn evaluate_bins(&mut self, at_end: bool) -> Result<Option<End>> {
        // Every rank passes here at the same steps (only rank 0 has the decoded sets).
        if self.cfg.eval_bin.is_empty() {
            return Ok(None);
        }
        let every = self.cfg.eval_every;
        if self.stopping || !(at_end || (every > 0 && self.state.step.is_multiple_of(every))) {
            return Ok(None);
        }
        let step = self.state.step;
        let (mut best, mut broken) = (None, None);
        if let (Some(bins), Some(logs)) = (&self.bins, self.logs.as_mut()) {
            let started = Instant::now();
            let scored = bins.score(&self.net, &self.numerics, &self.stop);
            self.meter.pause(started.elapsed());
            match scored {
                Ok(scores) => {
                    for s in &scores {
                        self.events.emit(Event::EvalBin { step, score: s });
                        logs.event(&s.event(step))?;
                    }
                    logs.draw()?;
                    best = scores
                        .iter()
                        .find(|s| self.cfg.best_on.as_deref() == Some(s.name.as_str()))
                        .map(|s| s.as_best(step));
                }
                // The step is whole: its checkpoint sees the stop flag, saves `last` and ends the run.
                Err(e) if matches!(e.downcast_ref::<EmbedError>(), Some(EmbedError::Stopped)) => {}
                Err(e) if matches!(e.downcast_ref::<EmbedError>(), Some(EmbedError::NonFinite { .. })) => {
                    broken = Some(format!("{e:#}"))
                }
                Err(e) => return Err(e),
            }
        }
        // Only rank 0 scored: every rank learns whether its network broke, and ends with it.
        if self.replicas.agree_any(broken.is_some())? {
            let what = broken.unwrap_or_else(|| "rank 0's embeddings are NaN or infinite".into());
            return Ok(Some(self.broken_network(format!("--eval-bin: {what}"))));
        }
        if self.cfg.best_on.is_some() {
            self.keep_if_best(best)?;
        }
        Ok(None)
    }

    /// How a run ends when its network gives NaN or infinite embeddings (`what` says where): as a
    /// divergence at this step, which is not saved, naming the first variable that cannot give
    /// finite embeddings, or saying that the activations overflowed.
    fn broken_network(&self, what: String) -> End {
        let why = weights_problem(&self.vs).unwrap_or_else(|| {
            let limit = if self.numerics.needs_loss_scaling() { " fp16's range (65504)" } else { "" };
            format!("every weight and statistic is finite: the activations overflowed{limit}")
        });
        End::Diverged { step: self.state.step, cause: format!("{what} ({why})") }
    }

    /// Writes `best` when `candidate` beats the best so far (the first of equal values stays).
    /// The ranks decide together (writing may need all of them: a sharded head is gathered);
    /// a rank that did not score (`None`: only rank 0 scores `--eval-bin` sets) follows.
    fn keep_if_best(&mut self, candidate: Option<BestMetric>) -> Result<()> {
        let improved =
            candidate.as_ref().is_some_and(|c| self.state.best.as_ref().is_none_or(|b| b.is_beaten_by(c.value)));
        if self.replicas.agree_any(improved)? {
            if let Some(c) = candidate {
                self.state.best = Some(c);
            }
            self.save(BEST)?;
        }
        Ok(())
    }

    /// Writes `last` every `--checkpoint-every` steps, at the end and when asked to stop, and
    /// says what the loop does next.
    fn checkpoint(&mut self, at_end: bool) -> Result<After> {
        let epoch_done = self.state.batch_in_epoch >= self.batches_per_epoch;
        if epoch_done {
            self.next_epoch();
        }
        let stop = self.replicas.agree_any(self.stopping || self.stop.is_set())?;
        let every = self.cfg.checkpoint_every;
        if at_end || stop || (every > 0 && self.state.step.is_multiple_of(every)) {
            // A checkpoint is a read point: what it saves (the schedule's loss history, the
            // scaler) is up to date, and a step that diverged since the last read is not saved.
            if let Some(end) = self.read_back()? {
                return Ok(After::End(end));
            }
            self.save(LAST)?;
        }
        Ok(if stop {
            After::End(End::Interrupted)
        } else if at_end {
            After::End(End::Finished)
        } else if epoch_done {
            After::NextEpoch
        } else {
            After::Continue
        })
    }

    /// The one place that brings the state up to date (scaler, schedule, time) and writes a
    /// checkpoint.
    fn save(&mut self, name: &str) -> Result<()> {
        self.snapshot()?;
        let writer = self.replicas.rank() == 0;
        let shards = self.shards.as_deref();
        // With a sharded head every rank takes part (its rows are gathered); otherwise only rank 0.
        if !writer && shards.is_none() {
            return Ok(());
        }
        checkpoint::write(self.run.paths(), name, &self.vs, self.opt.as_ref(), &self.state, shards, writer)?;
        if name == LAST {
            self.last_checkpoint = Some(self.state.step);
        }
        Ok(())
    }

    /// Brings the state up to date for a checkpoint or the summary (the scaler's state is the
    /// last read point's: every save follows one).
    fn snapshot(&mut self) -> Result<()> {
        self.state.train_seconds = self.seconds_before + self.meter.elapsed_s();
        self.state.schedule = serde_json::to_value(&self.schedule)?;
        Ok(())
    }

    /// Reads what is pending (a divergence found there is how the run ended, unless it had
    /// already diverged), flushes and draws the logs (and writes `last` for a finished run) and
    /// sums the run up.
    fn end(mut self, end: End) -> Result<Outcome> {
        let end = match self.read_back()? {
            Some(diverged) if !matches!(end, End::Diverged { .. }) => diverged,
            _ => end,
        };
        self.snapshot()?;
        if matches!(end, End::Finished) && self.last_checkpoint != Some(self.state.step) {
            self.save(LAST)?;
        }
        if let Some(logs) = self.logs.as_mut() {
            logs.flush()?;
            if matches!(end, End::Finished | End::Interrupted) {
                logs.draw()?;
            }
        }
        self.events.emit(Event::Ended);
        // No rank leaves while rank 0 still writes the end of the run.
        self.replicas.barrier()?;
        let summary = Summary {
            run_dir: self.run.root().to_path_buf(),
            steps: self.state.step,
            final_loss: self.final_loss,
            best: self.state.best.clone(),
            images_per_second: self.meter.images_per_second() * self.replicas.world_size() as f64,
            mean_data_wait_ms: self.meter.mean_data_wait_ms(),
            skipped_corrupt: self.state.skipped_corrupt + self.valid_skipped,
            loss_scaling: self.state.scaler.clone(),
            last_checkpoint: self.last_checkpoint,
            has_best: self.run.existing_checkpoint(BEST).is_some(),
        };
        Ok(match end {
            End::Finished => Outcome::Finished(summary),
            End::Interrupted => Outcome::Interrupted(summary),
            End::Diverged { step, cause } => Outcome::Diverged { step, cause, summary },
            End::Corrupt(message) => Outcome::CorruptData { message, summary },
            End::NothingLeft(reason) => Outcome::NothingLeft { reason, summary },
        })
    }
}
