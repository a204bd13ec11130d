#!/usr/bin/env bash
# Benchmark `facekit pack` against the original approach (scripts/pack_reference.py: Python dlib
# HOG + 5-point predictor + get_face_chip + Pillow JPEG q95, one process) on the same photos, in
# the same run. Prints a Markdown table of images/s and images/s per core.
#
# Usage: scripts/bench-pack.sh [ROOT]   (default ../shared/data/lfw100)
# Needs: `source .facekit.env` (venv with dlib, FACEKIT_MODELS). Builds facekit with --release.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="${1:-../shared/data/lfw100}"
PY="${PYTHON:-.venv/bin/python}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
# FACEKIT_BIN=path skips the build (a release binary built from this tree).
FK="${FACEKIT_BIN:-}"
if [ -z "$FK" ]; then cargo build --release --quiet --bin facekit; FK=${CARGO_TARGET_DIR:-target}/release/facekit; fi
CORES="$(nproc)"
LOAD="$(cut -d' ' -f1-3 /proc/loadavg)"
N="$(find -L "$ROOT" -type f | wc -l)"

now() { date +%s.%N; }
rate() { python3 -c "print(f'{$1 / ($3 - $2):.1f}')"; }

# The reference also writes the landmarks file used by the --landmarks run below.
t0=$(now); "$PY" scripts/pack_reference.py "$ROOT" --landmarks-out "$WORK/landmarks.txt" > "$WORK/ref.json"; t1=$(now)
ref=$(rate "$N" "$t0" "$t1")

run() { # name threads extra-args...
  local name=$1 threads=$2; shift 2
  local a b; a=$(now); "$FK" pack "$ROOT" -o "$WORK/$name" --threads "$threads" --quiet "$@" > /dev/null; b=$(now)
  rate "$N" "$a" "$b"
}
fk1=$(run hog1 1)
fkn=$(run hogn "$CORES")
lm1=$(run lm1 1 --landmarks "$WORK/landmarks.txt")
lmn=$(run lmn "$CORES" --landmarks "$WORK/landmarks.txt")
per() { python3 -c "print(f'{$1 / $2:.1f}')"; }

echo "photos: $N from $ROOT; $(date -u +%F) on $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
echo "reference: $(cat "$WORK/ref.json"); load average before: $LOAD"
echo
echo "| pipeline | threads | images/s | images/s per core |"
echo "|---|---|---|---|"
echo "| Python dlib reference (HOG, get_face_chip, Pillow q95) | 1 | $ref | $ref |"
echo "| facekit pack --detector hog | 1 | $fk1 | $fk1 |"
echo "| facekit pack --detector hog | $CORES | $fkn | $(per "$fkn" "$CORES") |"
echo "| facekit pack --landmarks (no detection) | 1 | $lm1 | $lm1 |"
echo "| facekit pack --landmarks (no detection) | $CORES | $lmn | $(per "$lmn" "$CORES") |"
echo
echo "facekit hog / reference, per core: $(python3 -c "print(f'{$fk1 / $ref:.2f}x')")"
