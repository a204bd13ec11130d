//! Training: the loop, what it keeps, and how it is set up.
//!
//! - [`setup`]: from a [`TrainConfig`] to a ready [`Trainer`]: run folder, data, device,
//!   network, optimiser, scaler, schedule, state (fresh or resumed);
//! - [`run`]: the loop, whose body reads as its steps: next batch, [`step`], log, validate,
//!   evaluate bins, checkpoint; [`meter`] keeps its counters, [`labels`] guards against missing labels;
//! - [`step`]: forward, losses, backward, gradients combined across [`replicas`], optimiser;
//! - [`pending`]: the step's losses, gradient norm and skip flag kept on the device until a read
//!   point, where [`host_reads`] (the one counted door to the host) reads them all at once;
//! - [`replicas`]: the seam for data-parallel training (one process: [`SingleProcess`]);
//! - what a run keeps: [`config`] (`config.json`), [`state`] and [`checkpoint`] (with
//!   [`shards`]: a sharded head stored whole), [`logs`] (with [`tensorboard`]'s event files), the folder's lock in [`run_dir`] (its
//!   paths and file names are in [`crate::run::paths`]);
//! - how it computes: [`optim`] (the optimiser trait, SGD) and [`adamw`], [`clip`] (gradient
//!   clipping), [`schedule`] (dlib's plateau rule, step, cosine, polynomial, warm-up),
//!   [`crate::run::numerics`] with [`feed`] (the batch onto the device), [`amp`], [`scaler`] and
//!   [`layout`] (precision and memory format), [`validate`] with [`metrics`], [`eval_bins`]
//!   (insightface `.bin` verification during training, through [`crate::embedding`]).

pub mod adamw;
pub mod amp;
pub mod checkpoint;
pub mod clip;
pub mod config;
pub(crate) mod eval_bins;
pub mod feed;
pub mod host_reads;
pub mod labels;
pub mod layout;
pub mod logs;
pub mod meter;
pub mod metrics;
pub mod optim;
pub mod pending;
pub(crate) mod replicas;
pub mod run;
pub mod run_dir;
pub mod scaler;
pub mod schedule;
pub mod setup;
pub mod shards;
pub mod state;
pub mod step;
pub mod tensorboard;
pub mod validate;

pub use config::TrainConfig;
pub use replicas::{Replicas, SingleProcess};
pub use run::{Outcome, Summary, Trainer};
pub use run_dir::RunDir;
pub use setup::parse_device;

/// Trains (or resumes) the run `cfg` describes in this one process; `command_line` is recorded
/// in `config.json`; `stop` ends the run after the step in which it is set (the caller decides
/// what sets it: signals, in the command line); `events` hears what the run has to say.
pub fn train(
    cfg: TrainConfig,
    command_line: Vec<String>,
    stop: facekit_io::StopFlag,
    events: crate::events::Observer,
) -> anyhow::Result<Outcome> {
    Trainer::new(cfg, command_line, stop, Box::new(SingleProcess), events)?.run()
}
