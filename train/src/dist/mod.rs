//! Data-parallel training on PyTorch's own distributed engine (c10d), reached through a small C++
//! shim (`c10d_shim.cpp`): the same TCPStore rendezvous, Gloo and NCCL process groups and DDP
//! Reducer that `torch.distributed` uses.
//!
//! - [`store`]: the TCPStore every rank meets at;
//! - [`agree`]: the proof, before any collective on parameters, that every rank trains the same
//!   model on the same data;
//! - [`group`]: a process group and its collectives (in place on tch tensors, plus an autograd
//!   all-gather and the sharded cross-entropy Partial FC needs);
//! - [`reducer`]: DDP's gradient buckets, all-reduced while backward runs;
//! - [`env`](mod@env): where this process stands, from torchrun's variables;
//! - [`world`]: this rank's membership of the run: the store reached as torchrun's env://
//!   rendezvous reaches it, a heartbeat, and the diagnosis that names a rank that failed, died or
//!   hangs when a collective fails;
//! - [`launch`]: `facekit train --nproc-per-node`, torchrun's single-machine job without Python;
//! - [`ddp`]: the trainer's replicas as DistributedDataParallel does them.

pub mod agree;
pub mod ddp;
pub mod env;
mod ffi;
pub mod group;
pub mod launch;
pub mod reducer;
pub mod store;
pub mod world;

pub use ddp::Ddp;
pub use env::DistEnv;
pub use group::{Backend, ProcessGroup, ReduceOp};
pub use launch::spawn_local;
pub use reducer::Reducer;
pub use store::Store;
pub use world::World;

/// Makes libtorch's errors, and the c10d warnings that quote them, carry the line that raised
/// them instead of their whole C++ stack, for the rest of the process (the command line's choice:
/// PyTorch hides the same stacks unless `TORCH_SHOW_CPP_STACKTRACES=1`).
pub fn hide_cpp_stacks() {
    // SAFETY: no arguments; replaces c10's stack-trace fetcher, which c10 reads under its own lock.
    unsafe { ffi::facekit_hide_cpp_stacks() }
}
