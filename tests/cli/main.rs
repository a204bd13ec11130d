//! facekit end to end through its command line, one binary: packing real photos, training,
//! evaluation, verify-shard, every fault of the reliability issue, and the fuzzers' inputs.

#[cfg(all(feature = "torch", feature = "dlib"))]
mod eval_end_to_end;
mod fuzz_corpus;
#[cfg(feature = "dlib")]
mod pack_photos;
mod reliability;
#[cfg(feature = "torch")]
mod train_eval_bin;
#[cfg(feature = "torch")]
mod train_loop;
mod verify_shard;

/// The facekit binary built for these tests.
pub fn facekit() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_facekit"))
}
