//! facekit's libtorch half, from packed shards to a network users can load:
//!
//! - [`model`]: the networks (ResNet-50 V1 with torchvision's parameter names, a tiny variant,
//!   insightface's IR-ResNets with theirs), their embedding, gender and age heads, and `--init`;
//! - [`loss`]: ArcFace, gender softmax, DEX age, multi-task masking;
//! - [`run`]: what training and inference share about a run: every path and file name of a run
//!   folder ([`run::paths`], with [`run::paths::locate`] for the weights and `net.json` of a run,
//!   an export or a file), how a network computes ([`run::numerics`]), and a network rebuilt
//!   from `net.json` and weights ([`run::net`]);
//! - [`embedding`]: embedding face chips with a network and scoring verification `.bin` files,
//!   the same for the trainer's `--eval-bin` and for `eval`;
//! - [`trainer`]: the training loop as named steps, with everything it keeps (config,
//!   checkpoints, logs, schedules, mixed precision) and the seam for data-parallel training;
//! - [`dist`]: data-parallel training on PyTorch's c10d (process groups, DDP's Reducer);
//! - [`infer`]: embedding datasets and photos, verification with a network, export;
//! - [`events`]: what training and inference tell their caller while they run (this crate prints
//!   nothing).
//!
//! `trainer` and `infer` never import each other: what both need is in `run`, `embedding` and
//! `model`.
//!
//! This is the crate that owns the libtorch dependency; the data comes from `facekit-data`,
//! the metrics and evaluation files from `facekit-eval`.

pub mod audit;
pub mod dist;
pub mod embedding;
pub mod events;
pub mod infer;
pub mod loss;
pub mod model;
pub mod run;
pub mod trainer;

pub use trainer::{train, Outcome, Summary, TrainConfig, Trainer};
