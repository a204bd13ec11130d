//! The one door through which the training loop reads tensor values back to the host.
//!
//! On a GPU every such read is a synchronisation: the host waits until the device has finished
//! everything queued before it, and cannot queue the next step meanwhile. The loop therefore reads
//! only at its read points (every `--log-every` steps, checkpoints, validation, the end), each
//! read goes through [`HostReads::read`], and the reads are counted by the step they happened at,
//! so that "no read in the steady-state step" is something a test checks.

use anyhow::Result;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tch::{Device, Kind, Tensor};

/// Counts the device-to-host reads of a run, by step; clones share the count.
#[derive(Debug, Clone, Default)]
pub struct HostReads {
    by_step: Arc<Mutex<BTreeMap<u64, u64>>>,
}

impl HostReads {
    /// The values of `t` (any shape and kind) as f64 on the host, in row-major order; counted as
    /// one read at `step` (the steps completed when it happens).
    pub fn read(&self, step: u64, t: &Tensor) -> Result<Vec<f64>> {
        *self.by_step.lock().unwrap_or_else(|e| e.into_inner()).entry(step).or_default() += 1;
        Ok(Vec::<f64>::try_from(t.detach().to_device(Device::Cpu).to_kind(Kind::Double).flatten(0, -1))?)
    }

    /// Reads so far, by the step they happened at (steps without reads are absent).
    pub fn by_step(&self) -> BTreeMap<u64, u64> {
        self.by_step.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Reads so far.
    pub fn total(&self) -> u64 {
        self.by_step().values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_returns_the_values_and_counts_once_at_its_step() {
        let reads = HostReads::default();
        let shared = reads.clone();
        let v = reads.read(3, &Tensor::from_slice(&[1.5f32, -2.0, 4.0]).reshape([3, 1])).unwrap();
        assert_eq!(v, [1.5, -2.0, 4.0]);
        reads.read(3, &Tensor::from_slice(&[7i64])).unwrap();
        assert_eq!(shared.by_step(), BTreeMap::from([(3, 2)]));
        assert_eq!(shared.total(), 2);
    }
}
