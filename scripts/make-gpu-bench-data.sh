#!/usr/bin/env bash
# The shards scripts/bench-gpu.sh trains on: lfw100's 2,513 photos (100 identities, from the
# shared data folder) packed as JPEG q95 chips at 112 (`bench112`) and at 224 (`bench224`), without
# dlib, by the loader benchmark's packer (data/examples/loader_bench.rs), small
# enough to carry to a GPU machine (53 MiB: 15 MiB at 112, 38 MiB at 224); and `IJBC`, an IJB-C-format
# set of 4,000 faces over 100 LFW photos for `facekit eval ijb` (scripts/make-ijb-set.sh, 1.5 MiB).
#
# usage: scripts/make-gpu-bench-data.sh OUT_DIR   (env: FACEKIT_SHARED_DATA, LOADER_BENCH_BIN)
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 1 ] || { echo "usage: scripts/make-gpu-bench-data.sh OUT_DIR" >&2; exit 2; }
OUT="$1"
DATA="${FACEKIT_SHARED_DATA:-$PWD/../shared/data}"
[ -d "$DATA/lfw100" ] || { echo "no lfw100 in $DATA (set FACEKIT_SHARED_DATA)" >&2; exit 2; }
source .facekit.env
BIN="${LOADER_BENCH_BIN:-}"
if [ -z "$BIN" ]; then
  cargo build -q -p facekit-data --example loader_bench
  BIN=${CARGO_TARGET_DIR:-target}/debug/examples/loader_bench
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
"$BIN" pack "$DATA/lfw100" "$TMP" >&2
mkdir -p "$OUT"
# The datasets only: the packer's raw payload files are the loader benchmark's, not training's.
cp "$TMP"/bench112* "$TMP"/bench224* "$OUT"/
[ -f "$OUT/IJBC/meta/ijbc_template_pair_label.txt" ] || scripts/make-ijb-set.sh "$(realpath "$OUT")/IJBC" 4000 100
du -sh "$OUT" >&2
