//! facekit's libtorch half, from packed shards to a network users can load:
//!
//! - [`model`]: the networks (ResNet-50 V1 with torchvision's parameter names, a tiny variant,
//!   insightface's IR-ResNets with theirs), their embedding, gender and age heads, and `--init`;
//! - [`loss`]: ArcFace, gender softmax, DEX age, multi-task masking;
//! - [`trainer`]: the training loop as named steps, with everything it keeps (config,
//!   checkpoints, logs, schedules, mixed precision) and the seam for data-parallel training;
//! - [`dist`]: data-parallel training on PyTorch's c10d (process groups, DDP's Reducer);
//! - [`infer`]: embedding, verification with a network, export;
//! - [`events`]: what training and inference tell their caller while they run (this crate prints
//!   nothing).
//!
//! This is the crate that owns the libtorch dependency; the data comes from `facekit-data`,
//! the metrics and evaluation files from `facekit-eval`.

pub mod dist;
pub mod events;
pub mod infer;
pub mod loss;
pub mod model;
pub mod trainer;

pub use trainer::{train, Outcome, Summary, TrainConfig, Trainer};
