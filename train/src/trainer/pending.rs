//! What the steps between two read points leave on the device: each step's losses, gradient norm
//! and skip flag as one small device tensor, read back all at once (one collective across the
//! ranks, one read) at the next read point, in step order.

use super::host_reads::HostReads;
use super::logs::StepLosses;
use super::replicas::Replicas;
use anyhow::Result;
use tch::{Kind, Tensor};

/// Columns of a step's row: total, fr, gender and age losses, gradient norm, skip flag.
const COLUMNS: i64 = 6;

/// One step whose values are still on the device.
pub(crate) struct PendingStep {
    /// The step's number (1 for the first step of a run).
    pub step: u64,
    /// Its epoch.
    pub epoch: u64,
    /// The learning rate it used.
    pub lr: f64,
    /// Which task losses it has (fr, gender, age).
    pub tasks: [bool; 3],
    /// Whether it had a gradient norm (`--clip-grad-norm`).
    pub has_norm: bool,
    /// Whether the schedule takes this step's loss when it is read (dlib's plateau rule).
    pub observe_loss: bool,
    /// [`COLUMNS`] f64 on the device (absent tasks and norm are 0).
    pub row: Tensor,
}

impl PendingStep {
    /// The row of a step: its mean `losses` (device scalars; `None` for absent tasks), the
    /// gradient `norm` and the `found_inf` flag ([1] f32) that skipped it.
    pub fn row(total: &Tensor, tasks: &[Option<Tensor>; 3], norm: Option<&Tensor>, found_inf: &Tensor) -> Tensor {
        let zero = || total.zeros_like();
        let mut cols: Vec<Tensor> = vec![total.shallow_clone()];
        cols.extend(tasks.iter().map(|t| t.as_ref().map_or_else(zero, Tensor::shallow_clone)));
        cols.push(norm.map_or_else(zero, Tensor::shallow_clone));
        cols.push(found_inf.reshape([]));
        Tensor::stack(&cols.iter().map(|c| c.detach().to_kind(Kind::Double).reshape([])).collect::<Vec<_>>(), 0)
    }
}

/// A step as read: its values on the host.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ReadStep {
    /// The step's number.
    pub step: u64,
    /// Its epoch.
    pub epoch: u64,
    /// The learning rate it used.
    pub lr: f64,
    /// Its losses, the mean over the ranks.
    pub losses: StepLosses,
    /// The gradient norm before clipping, with `--clip-grad-norm`.
    pub grad_norm: Option<f64>,
    /// Whether its update was skipped (non-finite gradients or loss, on some rank).
    pub skipped: bool,
    /// Whether the schedule takes its loss.
    pub observe_loss: bool,
}

/// The steps not read yet, oldest first.
#[derive(Default)]
pub(crate) struct Pending {
    steps: Vec<PendingStep>,
}

impl Pending {
    /// Keeps a step's values until the next read.
    pub fn push(&mut self, step: PendingStep) {
        self.steps.push(step);
    }

    /// Whether no step waits to be read.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Reads every pending step, and `extra` (any device tensor, read in the same transfer), as
    /// one read at `at_step` through `reads`, the losses averaged over the ranks first (every rank
    /// reads at the same point, so the collective matches).
    pub fn read(
        &mut self,
        replicas: &mut dyn Replicas,
        reads: &HostReads,
        at_step: u64,
        extra: Option<&Tensor>,
    ) -> Result<(Vec<ReadStep>, Vec<f64>)> {
        let steps = std::mem::take(&mut self.steps);
        let mut parts = Vec::new();
        if !steps.is_empty() {
            let rows = Tensor::stack(&steps.iter().map(|s| s.row.shallow_clone()).collect::<Vec<_>>(), 0);
            replicas.mean_device(&rows)?;
            parts.push(rows.flatten(0, -1));
        }
        if let Some(e) = extra {
            parts.push(
                e.to_kind(Kind::Double).flatten(0, -1).to_device(parts.first().map_or(e.device(), Tensor::device)),
            );
        }
        if parts.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let mut values = reads.read(at_step, &Tensor::cat(&parts, 0))?;
        let rest = values.split_off(steps.len() * COLUMNS as usize);
        let read = steps.iter().zip(values.chunks(COLUMNS as usize)).map(|(s, v)| read_step(s, v)).collect();
        Ok((read, rest))
    }
}

fn read_step(s: &PendingStep, v: &[f64]) -> ReadStep {
    let task = |i: usize| s.tasks[i].then_some(v[1 + i]);
    ReadStep {
        step: s.step,
        epoch: s.epoch,
        lr: s.lr,
        losses: StepLosses { total: v[0], fr: task(0), gender: task(1), age: task(2) },
        grad_norm: s.has_norm.then_some(v[4]),
        skipped: v[5] > 0.0,
        observe_loss: s.observe_loss,
    }
}
