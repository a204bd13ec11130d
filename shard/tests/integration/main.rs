//! The shard crate's tests, one binary.

mod format;
