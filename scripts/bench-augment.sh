#!/usr/bin/env bash
# Cost of the optional augmentations (--random-crop, --color-jitter, --grey-prob) in facekit's
# loader against the same augmentations in PyTorch DataLoader + Pillow + torchvision, same JPEG
# bytes (lfw100 at 224x224 q95), one worker each, same run. Prints one JSON line per run; compare
# images_per_cpu_s (CPU time, not wall time: the dev box is shared).
#
# usage: scripts/bench-augment.sh [epochs] [CROP,JITTER,GREY]   (default 3 0.1,0.2,0.1)
set -euo pipefail
cd "$(dirname "$0")/.."
source .facekit.env
EPOCHS="${1:-3}"
SPEC="${2:-0.1,0.2,0.1}"
DATA="${FACEKIT_SHARED_DATA:-$PWD/../shared/data}"
DIR="${BENCH_DIR:-$(mktemp -d)}"
PY="${PYTHON:-$PWD/.venv/bin/python}"

cargo build --release --no-default-features --example loader_bench
BIN=${CARGO_TARGET_DIR:-target}/release/examples/loader_bench
[ -f "$DIR/bench224.manifest.json" ] || "$BIN" pack "$DATA/lfw100" "$DIR"

"$BIN" run "$DIR/bench224" 1 "$EPOCHS" 128 224
LOADER_BENCH_AUGMENT="$SPEC" "$BIN" run "$DIR/bench224" 1 "$EPOCHS" 128 224
"$PY" scripts/loader_reference.py "$DIR" 0 "$EPOCHS" 128
"$PY" scripts/loader_reference.py "$DIR" 0 "$EPOCHS" 128 "$SPEC"
