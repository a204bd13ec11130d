//! A c10d process group (Gloo on the CPU, NCCL on CUDA) and the collectives facekit uses, in place
//! on tch tensors.

use super::ffi::{self, FkGroup};
use super::store::Store;
use anyhow::{bail, Result};
use std::ffi::CString;
use std::sync::Once;
use std::time::Duration;
use tch::Tensor;

/// PyTorch's flight recorder, on by default, notes every collective in a record shared by the
/// process; it adds a group to that record outside its own lock, so two groups starting
/// collectives at once on two threads corrupt it (a crash, seen with ranks as threads of one test
/// process). facekit reads nothing from the recorder, so it is off unless the user asks for it
/// through one of these variables (then NCCL's timeout dumps work as in PyTorch).
const RECORDER_VARIABLES: [&str; 2] = ["TORCH_FR_BUFFER_SIZE", "TORCH_NCCL_TRACE_BUFFER_SIZE"];

/// Turns the flight recorder off before libtorch first reads its settings (at the first group).
fn recorder_off_unless_asked() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if RECORDER_VARIABLES.iter().all(|v| std::env::var_os(v).is_none()) {
            std::env::set_var(RECORDER_VARIABLES[0], "0");
        }
    });
}

/// Which c10d backend carries the collectives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Gloo, over TCP: CPU tensors.
    Gloo,
    /// NCCL: CUDA tensors, one GPU per rank.
    Nccl,
}

/// How a collective combines the ranks' tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    /// Elementwise sum.
    Sum,
    /// Elementwise mean.
    Avg,
    /// Elementwise maximum.
    Max,
    /// Elementwise minimum.
    Min,
}

impl Backend {
    /// The backend for training on `device`: `choice`, checked, or (None) NCCL on CUDA and Gloo
    /// on the CPU.
    pub fn for_device(choice: Option<Backend>, device: tch::Device) -> Result<Backend> {
        Ok(match (choice, device) {
            (Some(Backend::Gloo), _) | (None, tch::Device::Cpu) => Backend::Gloo,
            (Some(Backend::Nccl) | None, tch::Device::Cuda(_)) => Backend::Nccl,
            (Some(Backend::Nccl), _) => {
                bail!("the NCCL backend needs CUDA devices (this run trains on the CPU): use Gloo")
            }
            (None, d) => bail!("no collective backend for device {d:?}"),
        })
    }
}

/// Makes CUDA device `index` this thread's current device, as `torch.cuda.set_device` does: NCCL
/// makes its communicators on the current device, so each rank sets its own before its first
/// NCCL group. Needs a build with the `nccl` feature.
pub(crate) fn set_cuda_device(index: usize) -> Result<()> {
    let index = i32::try_from(index)?;
    // SAFETY: plain integer argument.
    ffi::check(
        unsafe { ffi::facekit_cuda_set_device(index) },
        &format!("cannot make cuda:{index} the current CUDA device"),
    )
}

impl ReduceOp {
    fn code(self) -> i32 {
        match self {
            ReduceOp::Sum => 0,
            ReduceOp::Avg => 1,
            ReduceOp::Max => 2,
            ReduceOp::Min => 3,
        }
    }
}

/// This rank's membership of a group of `size` ranks.
pub struct ProcessGroup {
    raw: *mut FkGroup,
    rank: usize,
    size: usize,
    backend: Backend,
}

// SAFETY: a group is used by one thread at a time (collectives must be issued in one order); it
// may move to another thread.
unsafe impl Send for ProcessGroup {}

impl ProcessGroup {
    /// Joins the group `name` of `size` ranks as `rank`, meeting through `store`; blocks until every
    /// rank has joined. A collective that gets no answer within `timeout` fails. `gloo_host` is the
    /// address Gloo binds (None: `GLOO_SOCKET_IFNAME`, else the hostname's address).
    pub fn new(
        store: &Store,
        name: &str,
        rank: usize,
        size: usize,
        backend: Backend,
        timeout: Duration,
        gloo_host: Option<&str>,
    ) -> Result<ProcessGroup> {
        if rank >= size {
            bail!("rank {rank} is not below the world size {size}");
        }
        recorder_off_unless_asked();
        let prefix = CString::new(name)?;
        let host = gloo_host.map(CString::new).transpose()?;
        let code = match backend {
            Backend::Gloo => 0,
            Backend::Nccl => 1,
        };
        let mut raw = std::ptr::null_mut();
        // SAFETY: valid store and strings; `raw` is written only on success.
        let rc = unsafe {
            ffi::facekit_group_new(
                store.raw(),
                prefix.as_ptr(),
                rank as i32,
                size as i32,
                code,
                timeout.as_secs_f64(),
                host.as_ref().map_or(std::ptr::null(), |h| h.as_ptr()),
                &mut raw,
            )
        };
        ffi::check(rc, &format!("rank {rank} of {size} cannot join the {backend:?} process group '{name}'"))?;
        Ok(ProcessGroup { raw, rank, size, backend })
    }

    /// A group of this process alone, over a private store on 127.0.0.1: every collective is the
    /// identity (for Partial FC on one device).
    pub fn solo(timeout: Duration) -> Result<ProcessGroup> {
        let store = Store::host("127.0.0.1", 0, 1, timeout, "solo")?;
        ProcessGroup::new(&store, "solo", 0, 1, Backend::Gloo, timeout, Some("127.0.0.1"))
    }

    /// Another handle on this group (the same ranks and connections).
    pub fn try_clone(&self) -> Result<ProcessGroup> {
        let mut raw = std::ptr::null_mut();
        // SAFETY: live group; the clone shares its c10d objects by reference count.
        ffi::check(unsafe { ffi::facekit_group_clone(self.raw, &mut raw) }, "process group")?;
        Ok(ProcessGroup { raw, rank: self.rank, size: self.size, backend: self.backend })
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Number of ranks.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The backend carrying the collectives.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Where this group's small tensors (agreements, exchanges) must live for a run training on
    /// `training`: the CPU under Gloo, the training GPU under NCCL (which reduces CUDA tensors only).
    pub(crate) fn tensor_device(&self, training: tch::Device) -> tch::Device {
        match self.backend {
            Backend::Nccl => training,
            Backend::Gloo => tch::Device::Cpu,
        }
    }

    /// Reduces each tensor in place across the ranks.
    pub fn all_reduce(&self, ts: &[&Tensor], op: ReduceOp) -> Result<()> {
        let p = ffi::ptrs(ts);
        // SAFETY: live group and tensors.
        ffi::check(unsafe { ffi::facekit_allreduce(self.raw, p.as_ptr(), p.len(), op.code()) }, "all-reduce")
    }

    /// Reduces the tensors in place, packed into one buffer.
    pub fn all_reduce_coalesced(&self, ts: &[&Tensor], op: ReduceOp) -> Result<()> {
        let p = ffi::ptrs(ts);
        // SAFETY: live group and tensors.
        ffi::check(
            unsafe { ffi::facekit_allreduce_coalesced(self.raw, p.as_ptr(), p.len(), op.code()) },
            "coalesced all-reduce",
        )
    }

    /// Overwrites the tensors with `root`'s, as DDP does with the initial weights.
    pub fn broadcast(&self, ts: &[&Tensor], root: usize) -> Result<()> {
        let p = ffi::ptrs(ts);
        // SAFETY: live group and tensors.
        ffi::check(unsafe { ffi::facekit_broadcast_coalesced(self.raw, p.as_ptr(), p.len(), root as i32) }, "broadcast")
    }

    /// The ranks' `input`s concatenated along dim 0 (rank order), without autograd.
    pub fn all_gather(&self, input: &Tensor) -> Result<Tensor> {
        let input = input.contiguous();
        let mut shape = input.size();
        shape[0] *= self.size as i64;
        let out = Tensor::empty(shape.as_slice(), (input.kind(), input.device()));
        // SAFETY: live group; `out` has room for every rank's rows.
        ffi::check(
            unsafe { ffi::facekit_allgather_base(self.raw, out.as_ptr() as *mut _, input.as_ptr()) },
            "all-gather",
        )?;
        Ok(out)
    }

    /// This rank's rows of the reduction of the ranks' `input`s (dim 0 split in rank order).
    pub fn reduce_scatter(&self, input: &Tensor, op: ReduceOp) -> Result<Tensor> {
        let input = input.contiguous();
        let mut shape = input.size();
        if shape[0] % self.size as i64 != 0 {
            bail!("reduce-scatter of {} rows over {} ranks", shape[0], self.size);
        }
        shape[0] /= self.size as i64;
        let out = Tensor::empty(shape.as_slice(), (input.kind(), input.device()));
        // SAFETY: live group; shapes checked above.
        ffi::check(
            unsafe { ffi::facekit_reduce_scatter_base(self.raw, out.as_ptr() as *mut _, input.as_ptr(), op.code()) },
            "reduce-scatter",
        )?;
        Ok(out)
    }

    /// Waits until every rank is here.
    pub fn barrier(&self) -> Result<()> {
        // SAFETY: live group.
        ffi::check(unsafe { ffi::facekit_barrier(self.raw) }, "barrier")
    }

    /// All-gather along dim 0 with autograd: backward sums the gradient over the ranks
    /// (reduce-scatter) and multiplies this rank's rows by `grad_scale`.
    pub fn all_gather_autograd(&self, input: &Tensor, grad_scale: f64) -> Result<Tensor> {
        let mut out = std::ptr::null_mut();
        // SAFETY: live group; the shim hands over a new at::Tensor that tch then owns.
        ffi::check(
            unsafe { ffi::facekit_all_gather_autograd(self.raw, input.as_ptr(), grad_scale, &mut out) },
            "all-gather",
        )?;
        Ok(unsafe { Tensor::from_ptr(out) })
    }

    /// Softmax cross-entropy (mean over rows) with the classes sharded over the ranks: `logits`
    /// `[N, C_local]` this rank's columns, `labels` `[N]` the column of each row's class here, -1
    /// where it is another rank's. The same loss on every rank; gradient flows to `logits`.
    pub fn sharded_cross_entropy(&self, logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
        let mut out = std::ptr::null_mut();
        // SAFETY: live group; the shim hands over a new at::Tensor that tch then owns.
        ffi::check(
            unsafe { ffi::facekit_dist_cross_entropy(self.raw, logits.as_ptr(), labels.as_ptr(), &mut out) },
            "sharded cross-entropy",
        )?;
        Ok(unsafe { Tensor::from_ptr(out) })
    }

    pub(super) fn raw(&self) -> *mut FkGroup {
        self.raw
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: created by facekit_group_new, freed once.
        unsafe { ffi::facekit_group_free(self.raw) }
    }
}
