//! DDP's gradient engine: PyTorch's C++ `c10d::Reducer`, which hooks every parameter's gradient
//! accumulator and all-reduces (averages) gradient buckets while backward is still running.
//!
//! The call protocol is `torch/nn/parallel/distributed.py`'s: before a forward whose gradients are
//! synchronised, [`Reducer::prepare_forward`]; after it, [`Reducer::prepare_backward`]; then a
//! plain backward, after which `.grad` holds the mean over the ranks. Leaving both out for a
//! micro-batch accumulates its gradients locally (DDP's `no_sync`).

use super::ffi::{self, FkReducer};
use super::group::ProcessGroup;
use anyhow::Result;
use tch::Tensor;

/// DDP's bucket size, `bucket_cap_mb=25`.
pub(crate) const BUCKET_BYTES: i64 = 25 << 20;

/// A Reducer over a fixed list of parameters.
pub struct Reducer {
    raw: *mut FkReducer,
}

// SAFETY: used from the training thread only; may move there.
unsafe impl Send for Reducer {}

impl Reducer {
    /// Hooks `params` (the same list in the same order on every rank; checked across the ranks)
    /// into `group`. `find_unused`: parameters that get no gradient in a step (masked heads) are
    /// found from the outputs and treated as zero instead of blocking the buckets.
    pub fn new(group: &ProcessGroup, params: &[&Tensor], find_unused: bool) -> Result<Reducer> {
        let p = ffi::ptrs(params);
        let mut raw = std::ptr::null_mut();
        // SAFETY: live group and parameters; the parameters outlive the reducer (the trainer owns both).
        let code = unsafe {
            ffi::facekit_reducer_new(group.raw(), p.as_ptr(), p.len(), BUCKET_BYTES, find_unused.into(), &mut raw)
        };
        ffi::check(code, "DDP reducer")?;
        Ok(Reducer { raw })
    }

    /// Before a forward pass whose gradients will be all-reduced.
    pub fn prepare_forward(&mut self) -> Result<()> {
        // SAFETY: live reducer.
        ffi::check(unsafe { ffi::facekit_reducer_prepare_forward(self.raw) }, "DDP prepare_for_forward")
    }

    /// After that forward pass: the next backward reduces the gradients. `outputs` are what
    /// backward starts from (searched for unused parameters in find-unused mode).
    pub fn prepare_backward(&mut self, outputs: &[&Tensor]) -> Result<()> {
        let p = ffi::ptrs(outputs);
        // SAFETY: live reducer and tensors.
        ffi::check(
            unsafe { ffi::facekit_reducer_prepare_backward(self.raw, p.as_ptr(), p.len()) },
            "DDP prepare_for_backward",
        )
    }
}

impl Drop for Reducer {
    fn drop(&mut self) {
        // SAFETY: created by facekit_reducer_new, freed once.
        unsafe { ffi::facekit_reducer_free(self.raw) }
    }
}
