#!/usr/bin/env bash
# Loader throughput (issue 6): facekit's loader vs PyTorch DataLoader + Pillow, same JPEG bytes,
# same machine, same run. Packs lfw100 (2,513 photos) resized to 224x224 JPEG q95 (no dlib), then
# times decode + flip (+ resize for the 112 row) with 1 and 2 workers for both. "Per core" is
# images per CPU-second of the whole process (workers included): wall time on a shared 2-core box
# mostly measures the neighbours.
#
# With CROP,JITTER,GREY (for example 0.1,0.2,0.1) it instead measures the optional augmentations
# (--random-crop, --color-jitter, --grey-prob): flip only against flip + those, in facekit and in
# PyTorch + Pillow + the same torchvision transforms, one worker each; one JSON line per run.
#
# usage: scripts/bench-loader.sh [epochs] [CROP,JITTER,GREY]   (env: FACEKIT_SHARED_DATA, BENCH_DIR)
set -euo pipefail
cd "$(dirname "$0")/.."
source .facekit.env
EPOCHS="${1:-3}"
BATCH=128
DATA="${FACEKIT_SHARED_DATA:-$PWD/../shared/data}"
DIR="${BENCH_DIR:-$(mktemp -d)}"
PY="${PYTHON:-$PWD/.venv/bin/python}"

cargo build --release -p facekit-data --example loader_bench
BIN=${CARGO_TARGET_DIR:-target}/release/examples/loader_bench
[ -f "$DIR/bench224.manifest.json" ] || "$BIN" pack "$DATA/lfw100" "$DIR"

if [ -n "${2:-}" ]; then
  "$BIN" run "$DIR/bench224" 1 "$EPOCHS" "$BATCH" 224
  LOADER_BENCH_AUGMENT="$2" "$BIN" run "$DIR/bench224" 1 "$EPOCHS" "$BATCH" 224
  "$PY" scripts/loader_reference.py "$DIR" 0 "$EPOCHS" "$BATCH"
  "$PY" scripts/loader_reference.py "$DIR" 0 "$EPOCHS" "$BATCH" "$2"
  exit 0
fi

results=()
for w in 1 2; do
  results+=("$("$BIN" run "$DIR/bench224" "$w" "$EPOCHS" "$BATCH" 224)")
  results+=("$("$PY" scripts/loader_reference.py "$DIR" "$w" "$EPOCHS" "$BATCH")")
done
results+=("$("$BIN" run "$DIR/bench224" 2 "$EPOCHS" "$BATCH" 112)")
results+=("$("$PY" scripts/loader_reference.py "$DIR" 0 "$EPOCHS" "$BATCH")")

printf '%s\n' "${results[@]}"
"$PY" - "${results[@]}" <<'PY'
import json, sys
rows = [json.loads(a) for a in sys.argv[1:]]
ref = {r["workers"]: r for r in rows if r["impl"] != "facekit"}
print("\n| loader | workers | output | wall images/s | images per CPU-second (per core) | vs PyTorch+Pillow, per core |")
print("|---|---|---|---|---|---|")
for r in rows:
    base = ref.get(r["workers"])
    ratio = f'{r["images_per_cpu_s"] / base["images_per_cpu_s"]:.2f}x' if r["impl"] == "facekit" and base and r["size"] == 224 else ""
    who = "facekit" if r["impl"] == "facekit" else "PyTorch DataLoader + Pillow"
    w = "0 (main process)" if r["workers"] == 0 else r["workers"]
    print(f'| {who} | {w} | {r["size"]}x{r["size"]} | {r["images_per_s"]:.0f} | {r["images_per_cpu_s"]:.0f} | {ratio} |')
PY
