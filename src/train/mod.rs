//! The training loop, its learning-rate schedules, checkpoints and logs.
//!
//! Pure-Rust parts ([`config`], [`state`], [`logs`], [`metrics`]) build without libtorch; the
//! optimiser, mixed precision ([`amp`], [`scaler`]), memory format ([`layout`]), checkpoints,
//! validation and the loop itself need feature `train`.

pub mod config;
pub mod logs;
pub mod metrics;
pub mod schedule;
pub mod run_dir;
pub mod state;
#[cfg(feature = "train")]
pub mod amp;
#[cfg(feature = "train")]
pub mod checkpoint;
#[cfg(feature = "train")]
pub mod layout;
#[cfg(feature = "train")]
pub mod numerics;
#[cfg(feature = "train")]
pub mod optim;
#[cfg(feature = "train")]
pub mod scaler;
#[cfg(feature = "train")]
pub mod validate;
#[cfg(feature = "train")]
pub mod run;
