#!/usr/bin/env bash
# The training step (issue 22): milliseconds per step of `facekit train --arch tiny` at 112 on one
# CPU thread, for each facekit binary given (e.g. one built from main before the change and one
# after), against PyTorch eager of the same network, head and optimiser (scripts/
# bench_step_reference.py) in the same run. The binaries run in turn, ROUNDS times (default 3),
# interleaved with the reference, and the table gives each one's median. facekit's figure is the
# compute part of a step: the log windows after the first (start-up excluded), less their data
# wait. The dataset is packed once from BENCH_PHOTOS (default: 12 LFW people of
# /work/shared/data/lfw100) at 112 with the first binary.
#
# usage: scripts/bench-step.sh FACEKIT_BIN... (env: ROUNDS, STEPS, BATCH, BENCH_PHOTOS, BENCH_DIR)
set -euo pipefail
cd "$(dirname "$0")/.."
source .facekit.env
[ $# -ge 1 ] || { echo "usage: $0 FACEKIT_BIN..." >&2; exit 2; }
ROUNDS="${ROUNDS:-3}" STEPS="${STEPS:-60}" BATCH="${BATCH:-32}" LOG_EVERY=20
export OMP_NUM_THREADS=1
PY="${PYTHON:-.venv/bin/python}"
DIR="${BENCH_DIR:-$(mktemp -d)}"
PHOTOS="${BENCH_PHOTOS:-}"
if [ -z "$PHOTOS" ]; then
  PHOTOS="$DIR/photos"
  mkdir -p "$PHOTOS"
  for p in $(ls -d /work/shared/data/lfw100/*/ | head -12); do
    cp -r "$p" "$PHOTOS/"
  done
fi
[ -f "$DIR/training/bench.manifest.json" ] || "$1" pack "$PHOTOS" -o "$DIR/training/bench" --size 112 --detector hog >/dev/null 2>&1 ||
  { echo "packing $PHOTOS failed" >&2; exit 2; }
CLASSES=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['classes'])" "$DIR/training/bench.manifest.json" 2>/dev/null || echo 12)

facekit_ms() {  # binary, run name -> ms/step of compute (window mean less its data wait)
  "$1" train FR --train-sets bench --data-dir "$DIR/training" --arch tiny --image-size 112 \
    --batch-size "$BATCH" --max-steps "$STEPS" --log-every "$LOG_EVERY" --valid-every 0 --checkpoint-every 0 \
    --device cpu --threads 1 --workers 1 --model-dir "$DIR/runs" --run-name "$2" --overwrite >/dev/null 2>&1
  "$PY" - "$DIR/runs/$2/train_log.jsonl" "$BATCH" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"images_per_second"' in l][1:]
batch = int(sys.argv[2])
ms = [1000 * batch / r["images_per_second"] - r["data_wait_ms"] for r in rows]
print(f"{sum(ms) / len(ms):.1f}")
PY
}

declare -A RESULTS
for round in $(seq "$ROUNDS"); do
  i=0
  for bin in "$@"; do
    i=$((i + 1))
    RESULTS[$i]+="$(facekit_ms "$bin" "b$i-r$round") "
  done
  RESULTS[ref]+="$("$PY" scripts/bench_step_reference.py --batch-size "$BATCH" --classes "$CLASSES" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["ms_per_step"])') "
done
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "$(lscpu | sed -n 's/^Model name: *//p'), $(date -u +%F), batch $BATCH, 112 px, 1 thread, $STEPS steps, $ROUNDS rounds"
printf '| runner | ms/step (median) | all rounds |\n|---|---|---|\n'
i=0
for bin in "$@"; do
  i=$((i + 1))
  printf '| facekit %s | %s | %s |\n' "$bin" "$(echo "${RESULTS[$i]}" | median)" "${RESULTS[$i]}"
done
printf '| PyTorch eager | %s | %s |\n' "$(echo "${RESULTS[ref]}" | median)" "${RESULTS[ref]}"
