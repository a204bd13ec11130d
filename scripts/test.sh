#!/usr/bin/env bash
# The whole test suite, as CI runs it: sets up what is missing, then tests the full build and the
# training-only build (no dlib), which is what runs on GPU machines.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
source .facekit.env
export CARGO_TERM_COLOR=never
echo "== full build (pack + train): all tests"
cargo test --all-targets
echo "== training-only build (no dlib): its share of the tests"
cargo test --all-targets --no-default-features --features train
