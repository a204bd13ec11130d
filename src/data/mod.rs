//! Streaming shards into shuffled, augmented, normalised batches.
