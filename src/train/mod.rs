//! The training loop, its learning-rate schedules, checkpoints and logs.

pub mod schedule;
