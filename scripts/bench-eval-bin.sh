#!/usr/bin/env bash
# Speed of `facekit train --eval-bin` (issue 14): one evaluation of an LFW-sized verification set
# (6,000 pairs, 12,000 images of 112x112; synthesised by repeating face chips of raw_images/) by the
# tiny network at 112 px on the CPU, 10-fold with flip test, at --eval-batch 10 (arcface_torch's
# batch) and at facekit's default (twice --batch-size 32 = 64); beside it the PyTorch eager
# reference written as arcface_torch's eval/verification.py (scripts/bench_eval_bin_reference.py)
# at the same batches (BATCHES, default "10 64"), TRIALS times (default 2) interleaved. Wall times
# on a shared box swing with the neighbours' load: the process CPU column (user + sys of the whole
# process, setup and decoding included) is the steadier one. facekit's wall figure is the
# `seconds` of the train_log.jsonl record (embedding and folds, the time the evaluation takes
# inside training); decoding happens once at setup and is reported separately. libtorch runs THREADS threads (default 1, see bench-train-precision.sh
# for why); each run first waits (at most QUIET_WAIT seconds, default 180) for the 1-minute load
# average to drop below 1.
#
# usage: scripts/bench-eval-bin.sh [pairs]   (env: BENCH_DIR, FACEKIT_BIN, THREADS, PYTHON, QUIET_WAIT,
#        BATCHES, TRIALS)
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f .facekit.env ] && source .facekit.env
PAIRS="${1:-6000}"
THREADS="${THREADS:-1}"
export OMP_NUM_THREADS="$THREADS"
PY="${PYTHON:-.venv/bin/python}"
DIR="${BENCH_DIR:-$(mktemp -d)}"
mkdir -p "$DIR/training"

if [ -z "${FACEKIT_BIN:-}" ]; then
  cargo build --release
  FACEKIT_BIN=${CARGO_TARGET_DIR:-target}/release/facekit
fi

# A training set for the one step the run takes before it evaluates.
[ -f "$DIR/training/demo.manifest.json" ] || "$FACEKIT_BIN" pack raw_images -o "$DIR/training/demo" --size 112 >/dev/null 2>&1

# The .bin: raw_images/ photos centre-cropped to the face, 112x112 JPEG q95 (insightface's chips),
# repeated to 2 x PAIRS images, same/different alternating, pickled by Python 3 as insightface does.
"$PY" - "$DIR/synth.bin" "$PAIRS" <<'PY'
import io, pickle, sys
from pathlib import Path
from PIL import Image
out, pairs = sys.argv[1], int(sys.argv[2])
chips = []
for p in sorted(Path("raw_images").rglob("*.jpg")):
    img = Image.open(p).convert("RGB")
    w, h = img.size
    img = img.crop(((w - 130) // 2, (h - 130) // 2, (w + 130) // 2, (h + 130) // 2)).resize((112, 112), Image.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=95)
    chips.append(buf.getvalue())
# A fresh bytes object per image: pickle would write a repeated object as a memo reference, which
# facekit's reader refuses beyond twice the file's size (a hostile file's expansion) and real
# files never contain.
bins = [bytes(bytearray(chips[i % len(chips)])) for i in range(2 * pairs)]
with open(out, "wb") as f:
    pickle.dump((bins, [k % 2 == 0 for k in range(pairs)]), f, protocol=4)
PY

wait_quiet() {
  for _ in $(seq "$(( ${QUIET_WAIT:-180} / 10 ))"); do
    awk '{exit !($1 < 1.0)}' /proc/loadavg && break
    sleep 10
  done
  cut -d' ' -f1 /proc/loadavg
}

echo "machine: $(nproc --all) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(date -u '+%F %H:%M UTC'); $PAIRS pairs; $THREADS libtorch thread(s)"
printf '| trial | runner | batch | evaluation s (wall) | forward images/s | process CPU s (user+sys, setup included) | load average before |\n|---|---|---|---|---|---|---|\n'
for trial in $(seq "${TRIALS:-2}"); do
  for batch in ${BATCHES:-10 64}; do
    load=$(wait_quiet)
    /usr/bin/time -f '%U %S' -o "$DIR/cpu" "$FACEKIT_BIN" train FR --train-sets demo --data-dir "$DIR/training" --arch tiny \
      --image-size 112 --batch-size 32 --max-steps 1 --valid-every 0 --checkpoint-every 0 --device cpu --workers 1 \
      --threads "$THREADS" --eval-bin "$DIR/synth.bin" --eval-every 0 --eval-batch "$batch" \
      --model-dir "$DIR/runs" --run-name "b$batch" --overwrite >/dev/null 2>"$DIR/b$batch.err"
    "$PY" - "$DIR/runs/b$batch/train_log.jsonl" "$batch" "$load" "$PAIRS" "$DIR/cpu" "$trial" <<'PY'
import json, sys
path, batch, load, pairs, cpu, trial = sys.argv[1:]
r = [json.loads(l)["eval_bin"] for l in open(path) if '"eval_bin"' in l][-1]
cpu_s = sum(float(x) for x in open(cpu).read().split())
print(f"| {trial} | facekit train --eval-bin | {batch} | {r['seconds']:.1f} | {4 * int(pairs) / r['seconds']:.0f} | {cpu_s:.1f} | {load} |")
PY
  done
  for batch in ${BATCHES:-10 64}; do
    load=$(wait_quiet)
    /usr/bin/time -f '%U %S' -o "$DIR/cpu" "$PY" scripts/bench_eval_bin_reference.py "$DIR/synth.bin" --batch-size "$batch" \
      --threads "$THREADS" --repeat 1 >"$DIR/ref.json"
    "$PY" - "$DIR/ref.json" "$load" "$DIR/cpu" "$trial" <<'PY'
import json, sys
path, load, cpu, trial = sys.argv[1:]
r = json.load(open(path))
cpu_s = sum(float(x) for x in open(cpu).read().split())
print(f"| {trial} | PyTorch eager, arcface_torch style | {r['batch_size']} | {r['eval_s']:.1f} (folds {r['folds_s']:.1f}) | {4 * r['pairs'] / r['eval_s']:.0f} | {cpu_s:.1f} | {load} |")
PY
  done
done
grep -h "decoded at" "$DIR"/b*.err | head -1 | sed 's/^/facekit setup: /'
