//! The seam where data-parallel training hooks in: how the copies of the network that train
//! together (one per GPU, rank) start equal, combine their gradients and agree on decisions.
//!
//! The trainer calls [`Replicas`] at exactly the points where ranks must meet: once when the
//! network is ready ([`Replicas::attach`]: rank 0's weights everywhere), around each forward and
//! backward ([`Replicas::before_forward`], [`Replicas::before_backward`]: DDP's Reducer reduces
//! gradient buckets while backward runs), after backward ([`Replicas::reduce_gradients`]), and
//! before acting on any value or decision that ends or skips a step: [`Replicas::any_device`] for
//! the device flag that skips a step with non-finite gradients, [`Replicas::mean_device`] for the
//! losses read at a read point (both on device tensors: neither waits for the host), and
//! [`Replicas::agree_any`]/[`Replicas::mean`] for host decisions (stop requests, corrupt records,
//! validation). A rank that decided alone would desynchronise the others. One process is
//! [`SingleProcess`], for which all of them are the identity; [`crate::dist::Ddp`] is PyTorch's
//! DDP, and nothing else in the loop changes.

use crate::dist::ProcessGroup;
use anyhow::Result;
use tch::nn::VarStore;
use tch::Tensor;

/// The ranks training one model together.
pub trait Replicas {
    /// Number of ranks.
    fn world_size(&self) -> usize;

    /// This process's rank (0 is the one that writes logs and checkpoints).
    fn rank(&self) -> usize;

    /// Once, before the first step: makes every rank's variables of `vs` rank 0's, and hooks the
    /// gradients of the trainable ones for reduction, except those named in `local` (a sharded
    /// head each rank owns alone). `find_unused`: some parameters may get no gradient in a step
    /// (masked multi-task heads).
    fn attach(&mut self, vs: &VarStore, local: &[String], find_unused: bool) -> Result<()>;

    /// Before a forward pass in training; `sync`: this pass's gradients are combined (the last
    /// micro-batch of a step).
    fn before_forward(&mut self, sync: bool) -> Result<()>;

    /// After that forward pass, before backward from `outputs`.
    fn before_backward(&mut self, outputs: &[&Tensor], sync: bool) -> Result<()>;

    /// Makes every gradient of `vs` the mean over the ranks (called after the last backward of a
    /// step; a no-op where [`Replicas::before_backward`] arranged it already).
    fn reduce_gradients(&mut self, vs: &VarStore) -> Result<()>;

    /// True on every rank when `local` is true on any rank.
    fn agree_any(&mut self, local: bool) -> Result<bool>;

    /// The mean over the ranks of each of `values` (a NaN anywhere makes that mean NaN).
    fn mean(&mut self, values: &[f64]) -> Result<Vec<f64>>;

    /// Makes the device tensor `t` the element-wise mean over the ranks, in place, without reading
    /// it (a NaN anywhere makes that mean NaN): how the loop's pending losses are combined.
    fn mean_device(&mut self, t: &Tensor) -> Result<()>;

    /// Makes the device flag `flag` (0 or 1 elements) the maximum over the ranks, in place, without
    /// reading it: a step that must be skipped on one rank is skipped on all.
    fn any_device(&mut self, flag: &Tensor) -> Result<()>;

    /// Makes the variables of `vs` that are not trained (batch norm's running statistics) rank 0's,
    /// so that validation and checkpoints see one network.
    fn sync_buffers(&mut self, vs: &VarStore) -> Result<()>;

    /// Waits for every rank (at the end of a run, so that none exits while rank 0 still writes).
    fn barrier(&mut self) -> Result<()>;

    /// A handle on the ranks' process group, for the collectives of a sharded head (Partial FC).
    fn group(&self) -> Result<ProcessGroup>;
}

/// One process, one device: nothing to combine.
#[derive(Debug, Default, Clone, Copy)]
pub struct SingleProcess;

impl Replicas for SingleProcess {
    fn world_size(&self) -> usize {
        1
    }

    fn rank(&self) -> usize {
        0
    }

    fn attach(&mut self, _vs: &VarStore, _local: &[String], _find_unused: bool) -> Result<()> {
        Ok(())
    }

    fn before_forward(&mut self, _sync: bool) -> Result<()> {
        Ok(())
    }

    fn before_backward(&mut self, _outputs: &[&Tensor], _sync: bool) -> Result<()> {
        Ok(())
    }

    fn reduce_gradients(&mut self, _vs: &VarStore) -> Result<()> {
        Ok(())
    }

    fn agree_any(&mut self, local: bool) -> Result<bool> {
        Ok(local)
    }

    fn mean(&mut self, values: &[f64]) -> Result<Vec<f64>> {
        Ok(values.to_vec())
    }

    fn mean_device(&mut self, _t: &Tensor) -> Result<()> {
        Ok(())
    }

    fn any_device(&mut self, _flag: &Tensor) -> Result<()> {
        Ok(())
    }

    fn sync_buffers(&mut self, _vs: &VarStore) -> Result<()> {
        Ok(())
    }

    fn barrier(&mut self) -> Result<()> {
        Ok(())
    }

    /// A group of this process alone (Partial FC on one device: its collectives are the identity).
    fn group(&self) -> Result<ProcessGroup> {
        ProcessGroup::solo(std::time::Duration::from_secs(60))
    }
}
