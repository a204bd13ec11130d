//! Verification metrics, embeddings and export.
//!
//! - [`metrics`]: insightface's k-fold accuracy, ROC curves, TAR at FAR (pure Rust);
//! - [`pairs`]: LFW `pairs.txt` parsing and resolution against an image folder;
//! - [`pickle`]: a safe reader for insightface's verification `.bin` files;
//! - [`npy`]: `.npy` float32 matrices for embeddings that Python reads directly;
//! - [`allpairs`]: all-pairs 1:1 verification (TAR at FAR, ROC) over labelled embeddings;
//! - [`faces`]: image files to face chips (pack alignment, insightface's centre-crop fallback);
//! - `embed`, `verify`, `export` (feature `train`): running a trained network.

pub mod allpairs;
pub mod faces;
pub mod metrics;
pub mod npy;
pub mod pairs;
pub mod pickle;
#[cfg(feature = "train")]
pub mod embed;
#[cfg(feature = "train")]
pub mod export;
#[cfg(feature = "train")]
pub mod verify;
