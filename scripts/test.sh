#!/usr/bin/env bash
# The whole test suite, as CI runs it: sets up what is missing, then tests every crate of the
# workspace in the full build, and again the build without dlib (what runs on GPU machines) where
# it differs: the command line and the pack crate; last, the binary with NCCL is built. The Python
# package's pytest suite runs after the full build.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
source .facekit.env
export CARGO_TERM_COLOR=never
# A test whose reference tool (MXNet, onnxruntime, Python) is missing fails here instead of skipping.
export FACEKIT_REQUIRE_REFERENCES=1
# Conventions first: they fail in seconds (formatting) or minutes (clippy), before the long build.
echo "== formatting (rustfmt.toml)"
cargo fmt --all --check
cargo fmt --manifest-path fuzz/Cargo.toml --check
# Lints (Cargo.toml's [workspace.lints], which lists the few allowed and why): clippy's warnings and
# a missing doc comment fail here, in the full build and in the build without dlib.
echo "== clippy"
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy --no-default-features --features facekit/torch -p facekit -p facekit-pack --all-targets -- -D warnings
# Library unit tests and the integration binaries (one per crate); the binary and the examples are
# built too, but have no tests of their own to link.
echo "== full build (dlib + torch): every crate's tests"
cargo test --workspace --lib --tests
cargo build --workspace --bins --examples
# The Python package (python/): setup.sh built and installed its wheel; its tests drive that
# build's `facekit` (verify-shard, train) and the example recording facekit train's batches.
echo "== the Python package: pytest over the installed wheel"
TARGET=${CARGO_TARGET_DIR:-target}
FACEKIT_BIN="$TARGET/debug/facekit" FACEKIT_TRAIN_BATCHES_BIN="$TARGET/debug/examples/train_batches" \
  .venv/bin/python -m pytest -q -p no:cacheprovider python/tests
echo "== build without dlib (torch only): the command line and pack, which differ there"
cargo test --no-default-features --features facekit/torch -p facekit -p facekit-pack --lib --tests
# No NCCL runs without GPUs, but its shim must still compile and link (headers from setup.sh,
# libtorch_cuda and c10_cuda) for the build people use on GPU machines.
echo "== build with NCCL (compiles and links; NCCL itself needs GPUs)"
cargo build -p facekit --features nccl --bin facekit
