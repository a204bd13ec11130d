//! Packing identity folders of raw photos into aligned, checksummed shards.
