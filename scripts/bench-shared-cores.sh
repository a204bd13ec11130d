#!/usr/bin/env bash
# CPU training step time when another process wants a core (issue "Trust", shared machines):
# the tiny network on training/demo (made by scripts/demo.sh), release build, one decode worker,
# libtorch on every core (--threads nproc) and on the cores the worker leaves (nproc - 1), with and
# without a competing busy process, under libgomp's default wait policy (what facekit ran with
# before: OMP_WAIT_POLICY empty) and under PASSIVE (facekit's default now). Reports seconds per
# step over the steps after the first LOG_EVERY.
#
# usage: scripts/bench-shared-cores.sh [steps] [image side]   (env: FACEKIT_BIN)
set -euo pipefail
cd "$(dirname "$0")/.."
source .facekit.env
STEPS="${1:-40}"
SIDE="${2:-112}"
LOG_EVERY=10
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"; kill $(jobs -p) 2>/dev/null || true' EXIT
[ -f training/demo.manifest.json ] || { echo "training/demo is missing: run scripts/demo.sh first" >&2; exit 2; }
if [ -z "${FACEKIT_BIN:-}" ]; then
  cargo build --release --no-default-features --features torch
  FACEKIT_BIN=${CARGO_TARGET_DIR:-target}/release/facekit
fi
printf '| wait policy | --threads | competing process | s/step | slowdown vs quiet |\n|---|---|---|---|---|\n'
for THREADS in $(nproc) $(( $(nproc) > 1 ? $(nproc) - 1 : 1 )); do
for policy in default PASSIVE; do
  quiet=""
  for busy in no yes; do
    if [ "$busy" = yes ]; then
      # One core's worth of someone else's work, as on a shared box.
      ( while :; do :; done ) &
      hog=$!
    fi
    value=$([ "$policy" = default ] && echo "" || echo PASSIVE)
    OMP_WAIT_POLICY="$value" "$FACEKIT_BIN" train FR --train-sets demo --data-dir training --arch tiny --image-size "$SIDE" \
      --batch-size 32 --max-steps "$STEPS" --log-every "$LOG_EVERY" --valid-every 0 --checkpoint-every 0 \
      --device cpu --workers 1 --threads "$THREADS" \
      --model-dir "$DIR" --run-name "$policy-$busy-$THREADS" >/dev/null 2>&1
    [ "$busy" = yes ] && { kill "$hog"; wait "$hog" 2>/dev/null || true; }
    sps=$("${PYTHON:-.venv/bin/python}" - "$DIR/$policy-$busy-$THREADS/train_log.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"images_per_second"' in l]
ips = [r["images_per_second"] for r in rows[1:]]
print(f"{32 * sum(1 / x for x in ips) / len(ips):.3f}")
PY
)
    [ -z "$quiet" ] && quiet=$sps
    ratio=$(echo "scale=1; $sps / $quiet" | bc)
    printf '| %s | %s | %s | %s | %sx |\n' "$policy" "$THREADS" "$busy" "$sps" "$ratio"
  done
done
done
