#!/usr/bin/env bash
# CPU training step speed of `facekit train` by --precision and --memory-format (issue 4): the tiny
# network on training/demo (made by scripts/demo.sh), release build, one process at a time. Reports
# images/s over the steps after the first LOG_EVERY (start-up and first-touch allocations excluded),
# CPU milliseconds per image over the whole process (start-up and decoding included) and the load
# average before each run. libtorch runs one thread (THREADS, default 1): with two, OpenMP's
# barriers spin while a neighbour holds the other core, and on a shared box wall times swing 10x;
# one thread keeps CPU time per image comparable between runs. Each run first waits (at most
# 3 minutes) for the 1-minute load average to drop below 1.
#
# usage: scripts/bench-train-precision.sh [steps] [image side]   (env: BENCH_DIR, FACEKIT_BIN)
set -euo pipefail
cd "$(dirname "$0")/.."
source .facekit.env
STEPS="${1:-60}"
SIDE="${2:-112}"
LOG_EVERY=20
export OMP_NUM_THREADS="${THREADS:-1}"
DIR="${BENCH_DIR:-$(mktemp -d)}"
[ -f training/demo.manifest.json ] || { echo "training/demo is missing: run scripts/demo.sh first" >&2; exit 2; }

if [ -z "${FACEKIT_BIN:-}" ]; then
  cargo build --release --no-default-features --features torch
  FACEKIT_BIN=${CARGO_TARGET_DIR:-target}/release/facekit
fi

printf '| precision | memory format | images/s | ms/step | CPU ms/image | load average before |\n|---|---|---|---|---|---|\n'
for run in "fp32 contiguous" "fp32 channels-last" "bf16 contiguous" "bf16 channels-last" "fp16 contiguous" "fp16 channels-last"; do
  set -- $run
  for _ in $(seq 18); do
    awk '{exit !($1 < 1.0)}' /proc/loadavg && break
    sleep 10
  done
  load=$(cut -d' ' -f1 /proc/loadavg)
  /usr/bin/time -f '%U %S' -o "$DIR/cpu" "$FACEKIT_BIN" train FR --train-sets demo --data-dir training --arch tiny --image-size "$SIDE" \
    --batch-size 32 --max-steps "$STEPS" --log-every "$LOG_EVERY" --valid-every 0 --checkpoint-every 0 \
    --device cpu --workers 1 --precision "$1" --memory-format "$2" \
    --model-dir "$DIR" --run-name "$1-$2" --overwrite >/dev/null 2>&1
  # The log's windows after the first one: images/s of steady-state steps.
  "${PYTHON:-.venv/bin/python}" - "$DIR/$1-$2/train_log.jsonl" "$1" "$2" "$load" "$DIR/cpu" "$STEPS" <<'PY'
import json, sys
path, precision, fmt, load, cpu, steps = sys.argv[1:]
cpu_s = sum(float(x) for x in open(cpu).read().split())
rows = [json.loads(l) for l in open(path) if '"images_per_second"' in l]
ips = [r["images_per_second"] for r in rows[1:]]
mean = len(ips) / sum(1 / x for x in ips)  # equal step counts per window: harmonic mean
print(f"| {precision} | {fmt} | {mean:.1f} | {1000 * 32 / mean:.0f} | {1000 * cpu_s / (32 * int(steps)):.1f} | {load} |")
PY
done
