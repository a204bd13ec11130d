//! The training loop, its learning-rate schedules, checkpoints and logs.
