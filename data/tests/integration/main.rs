//! The data loader's tests, one binary.

mod loader;
mod stages;
