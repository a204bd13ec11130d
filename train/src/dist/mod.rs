//! Data-parallel training on PyTorch's own distributed engine (c10d), reached through a small C++
//! shim (`c10d_shim.cpp`): the same TCPStore rendezvous, Gloo and NCCL process groups and DDP
//! Reducer that `torch.distributed` uses.
//!
//! - [`store`]: the TCPStore every rank meets at;
//! - [`group`]: a process group and its collectives (in place on tch tensors, plus an autograd
//!   all-gather and the sharded cross-entropy Partial FC needs);
//! - [`reducer`]: DDP's gradient buckets, all-reduced while backward runs;
//! - [`ddp`]: the trainer's replicas as DistributedDataParallel does them.

pub mod ddp;
mod ffi;
pub mod group;
pub mod reducer;
pub mod store;

pub use ddp::Ddp;
pub use group::{Backend, ProcessGroup, ReduceOp};
pub use reducer::Reducer;
pub use store::Store;
