//! The seam where data-parallel training hooks in: how the copies of the network that train
//! together (one per GPU, rank) combine their gradients and agree on decisions.
//!
//! The trainer calls [`Replicas`] at exactly the points where ranks must meet: after `backward`
//! ([`Replicas::reduce_gradients`], before the optimiser reads a gradient) and before acting on any
//! decision that ends or skips a step ([`Replicas::agree_any`]: a non-finite loss, a stop
//! request). A rank that decided alone would desynchronise the others. One process is
//! [`SingleProcess`], for which both are the identity; a distributed layer (c10d process group
//! and DDP reducer) is another implementation, and nothing else in the loop changes.

use anyhow::Result;
use tch::nn::VarStore;

/// The ranks training one model together.
pub trait Replicas {
    /// Number of ranks.
    fn world_size(&self) -> usize;

    /// This process's rank (0 is the one that writes logs and checkpoints).
    fn rank(&self) -> usize;

    /// Makes every gradient of `vs` the mean over the ranks (called after `backward`).
    fn reduce_gradients(&mut self, vs: &VarStore) -> Result<()>;

    /// True on every rank when `local` is true on any rank.
    fn agree_any(&mut self, local: bool) -> Result<bool>;
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

    fn reduce_gradients(&mut self, _vs: &VarStore) -> Result<()> {
        Ok(())
    }

    fn agree_any(&mut self, local: bool) -> Result<bool> {
        Ok(local)
    }
}
