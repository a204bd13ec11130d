//! The evaluation crate's tests, one binary: metrics against numpy and scikit-learn, pairs lists,
//! `.bin` pickles (read and written), hostile files.

mod bin_write;
mod hostile_files;
mod metrics;
mod pairs;
mod pickle;
