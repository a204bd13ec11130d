//! Face verification without a network: the metrics, and the files evaluation reads and writes.
//!
//! - [`metrics`]: insightface's k-fold accuracy, ROC curves, TAR at FAR;
//! - [`allpairs`]: all-pairs 1:1 verification (TAR at FAR, ROC) over labelled embeddings;
//! - [`pairs`]: LFW `pairs.txt` parsing and resolution against an image folder;
//! - [`pickle`]: a safe reader for insightface's verification `.bin` files, and [`bin_write`]
//!   their writer, and [`make_bin`] what goes into one made from a pairs list (`facekit eval
//!   make-bin`);
//! - [`npy`]: `.npy` float32 matrices for embeddings that Python reads directly, and
//!   [`embeddings`]: the folder `facekit embed` writes (`embeddings.npy` + `labels.tsv`);
//! - [`plot`]: the PNG line charts (ROC, loss curves);
//! - [`ijb`]: IJB-B and IJB-C template evaluation (meta files, template pooling, 1:1 and 1:N figures).
//!
//! Running a network over the faces (embedding, the protocols with a model, export) is
//! `facekit_train::infer`; this crate has no libtorch, so the file formats can be read, checked
//! and fuzzed on their own.

pub mod allpairs;
pub mod bin_write;
pub mod draw;
pub mod embeddings;
pub mod ijb;
pub mod make_bin;
pub mod metrics;
pub mod npy;
pub mod pairs;
pub mod pickle;
pub mod plot;
