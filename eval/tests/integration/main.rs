//! The evaluation crate's tests, one binary: metrics against numpy and scikit-learn, pairs lists,
//! `.bin` pickles, hostile files.

mod hostile_files;
mod metrics;
mod pairs;
mod pickle;
