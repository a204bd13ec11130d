#!/usr/bin/env bash
# One GPU, one table (issue 22): `facekit train` on synthetic batches made on the device
# (--synthetic) and on real packed shards, against a PyTorch reference of the same network, ArcFace
# head, batch, precision (autocast) and memory layout (channels-last) on synthetic input
# (scripts/bench_gpu_reference.py), at 112 (IR-ResNet50) and 224 (ResNet-50): images/s over the
# steps after the first log window, data wait per step, peak device memory, the device's name.
# Then facekit once more with CUDA's synchronisation debug mode set to `error` during every step
# after the warm-up (FACEKIT_CUDA_SYNC_DEBUG_AFTER, docs/TRAINING.md "Feeding a GPU"), and PyTorch
# likewise: a step that makes the host wait for the GPU fails there, and the table says which call.
#
# Then `facekit eval ijb` with the first row's trained network on DATA_DIR/IJBC (4,000 faces, image
# and mirror; scripts/make-gpu-bench-data.sh makes it): faces per second of the whole command
# (reading, aligning, the network, pooling, the report), nothing cached.
#
# Peak memory is the largest `nvidia-smi` reading during the run (CUDA context included, the same
# way for both); on the CPU, the process's peak resident memory.
#
# On a machine without CUDA it runs a smoke version instead: the tiny network at 112, fp32,
# contiguous, batch 8, 6 steps, one libtorch thread, in well under a minute (the sync check is
# reported as not run). It checks that the script, the binary and the reference work together;
# its figures say nothing about a GPU.
#
# usage: scripts/bench-gpu.sh FACEKIT_BIN DATA_DIR [steps]
#   FACEKIT_BIN  a training build of facekit linked against the same PyTorch as PYTORCH_PYTHON's,
#                e.g. `cargo build --release --no-default-features --features facekit/nccl -p facekit`
#                (no dlib; NCCL and CUDA's sync debug mode)
#   DATA_DIR     holds bench112 and bench224 (scripts/make-gpu-bench-data.sh DATA_DIR; 53 MiB)
#   env: PYTORCH_PYTHON (default /opt/torch/.venv/bin/python), PRECISION (bf16 or fp16, default
#        bf16), BATCH (default 128), BENCH_DIR (run folders; default a temporary folder)
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { sed -n '/^# usage/,/^set -e/p' "$0" | sed '$d' >&2; exit 2; }
BIN=$(realpath "$1")
DATA=$(realpath "$2")
PY="${PYTORCH_PYTHON:-/opt/torch/.venv/bin/python}"
DIR="${BENCH_DIR:-$(mktemp -d)}"
mkdir -p "$DIR"
for set in bench112 bench224; do
  [ -f "$DATA/$set.manifest.json" ] || { echo "$DATA/$set is missing: run scripts/make-gpu-bench-data.sh $DATA" >&2; exit 2; }
done
[ -x "$PY" ] || { echo "no Python at $PY (set PYTORCH_PYTHON)" >&2; exit 2; }
TORCH_LIB=$("$PY" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
CLASSES=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["classes"])' "$DATA/bench112.manifest.json")

if "$PY" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
  DEVICE=cuda STEPS="${3:-300}" LOG_EVERY=50 WARMUP=20 BATCH="${BATCH:-128}"
  PREC="${PRECISION:-bf16}" FORMAT=channels-last
  RUNS=("iresnet50 112 bench112" "resnet50 224 bench224")
  WORKERS=0
else
  echo "no CUDA device: smoke run with the tiny network on the CPU" >&2
  DEVICE=cpu STEPS="${3:-6}" LOG_EVERY=2 WARMUP=2 BATCH=8 PREC=fp32 FORMAT=contiguous
  RUNS=("tiny 112 bench112")
  WORKERS=1
  export OMP_NUM_THREADS=1
fi

# Runs "$@" and prints the peak memory in GiB it used: nvidia-smi's largest reading on CUDA (a
# sampler in the background), the peak resident set on the CPU.
peak_of() {
  local out="$DIR/peak.$$" rc=0
  if [ "$DEVICE" = cuda ]; then
    (while :; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0; sleep 0.2; done) > "$out" 2>/dev/null &
    local sampler=$!
    "$@" || rc=$?
    kill "$sampler"; wait "$sampler" 2>/dev/null || true
    PEAK=$(sort -n "$out" | tail -1 | awk '{printf "%.2f", $1 / 1024}')
  else
    /usr/bin/time -f '%M' -o "$out" "$@" || rc=$?
    PEAK=$(tail -1 "$out" | awk '{printf "%.2f", $1 / 1048576}')
  fi
  return $rc
}

# facekit train on $1 $2 over set $3 with extra flags; prints a table row.
facekit_row() {
  local arch=$1 size=$2 set=$3 label=$4; shift 4
  local run="$arch-$size-$label" rc=0
  peak_of "$BIN" train FR --train-sets "$set" --data-dir "$DATA" --arch "$arch" --image-size "$size" \
    --batch-size "$BATCH" --max-steps "$STEPS" --log-every "$LOG_EVERY" --valid-every 0 --checkpoint-every 0 \
    --device "$DEVICE" --workers "$WORKERS" --precision "$PREC" --memory-format "$FORMAT" \
    --model-dir "$DIR" --run-name "$run" --overwrite "$@" > "$DIR/$run.out" 2>&1 || rc=$?
  "$PY" - "$DIR/$run/train_log.jsonl" "$DIR/$run.out" "$rc" "facekit, $label" "$arch" "$size" "$PEAK" "$GPU" <<'PY'
import json, os, sys
log, out, rc, runner, arch, size, peak, gpu = sys.argv[1:]
rows = [json.loads(l) for l in open(log) if '"images_per_second"' in l] if os.path.exists(log) else []
rows = rows[1:]  # the first window holds start-up
if rc != "0" or not rows:
    last = [l for l in open(out).read().splitlines() if l.strip()][-1:] or ["no output"]
    print(f"| {runner} | {arch} | {size} | failed (exit {rc}): {last[0][:160]} | | | {gpu} |")
else:
    ips = len(rows) / sum(1 / r["images_per_second"] for r in rows)  # equal windows: harmonic mean
    wait = sum(r["data_wait_ms"] for r in rows) / len(rows)
    print(f"| {runner} | {arch} | {size} | {ips:.1f} | {wait:.2f} | {peak} | {gpu} |")
PY
}

pytorch_row() {
  local arch=$1 size=$2 sync=$3 cl=() rc=0
  [ "$FORMAT" = channels-last ] && cl=(--channels-last)
  peak_of "$PY" scripts/bench_gpu_reference.py --arch "$arch" --image-size "$size" --batch-size "$BATCH" \
    --classes "$CLASSES" --precision "$PREC" "${cl[@]}" --steps "$STEPS" --warmup "$WARMUP" --sync-debug "$sync" \
    > "$DIR/pytorch-$arch-$size-$sync.json" 2> "$DIR/pytorch-$arch-$size-$sync.err" || rc=$?
  "$PY" - "$DIR/pytorch-$arch-$size-$sync.json" "$DIR/pytorch-$arch-$size-$sync.err" "$rc" "$arch" "$size" "$PEAK" "$sync" "$GPU" <<'PY'
import json, sys
path, err, rc, arch, size, peak, sync, gpu = sys.argv[1:]
lines = open(path).read().splitlines()
if rc != "0" or not lines:
    last = [l for l in open(err).read().splitlines() if l.strip()][-1:] or ["no output"]
    print(f"| PyTorch eager, synthetic | {arch} | {size} | failed (exit {rc}): {last[0][:160]} | | | {gpu} |")
    sys.exit()
r = json.loads(lines[-1])
if sync == "error":
    verdict = "no synchronisation in the timed steps" if r["synchronised"] is None else f"synchronises: {r['synchronised'][:160]}"
    print(f"| PyTorch eager, sync debug `error` | {arch} | {size} | {verdict} | | | {gpu} |")
else:
    print(f"| PyTorch eager, synthetic | {arch} | {size} | {r['images_per_s']:.1f} | {r['data_wait_ms']:.2f} | {peak} | {gpu} |")
PY
}

# The sync check: facekit with the debug mode `error` inside every step after the warm-up.
sync_row() {
  local arch=$1 size=$2 set=$3 run="$1-$2-sync" rc=0
  if [ "$DEVICE" != cuda ]; then
    echo "| facekit, sync debug \`error\` | $arch | $size | not run: CUDA's sync debug mode needs a GPU | | | $GPU |"
    return
  fi
  FACEKIT_CUDA_SYNC_DEBUG_AFTER="$WARMUP" "$BIN" train FR --train-sets "$set" --data-dir "$DATA" --arch "$arch" \
    --image-size "$size" --batch-size "$BATCH" --max-steps $((WARMUP + 20)) --log-every 1000 --valid-every 0 \
    --checkpoint-every 0 --device "$DEVICE" --workers "$WORKERS" --precision "$PREC" --memory-format "$FORMAT" \
    --model-dir "$DIR" --run-name "$run" --overwrite > "$DIR/$run.out" 2>&1 || rc=$?
  if [ "$rc" = 0 ]; then
    echo "| facekit, sync debug \`error\` | $arch | $size | no synchronisation in steps $((WARMUP + 1))-$((WARMUP + 20)) | | | $GPU |"
  else
    local why
    # libtorch's message names the synchronising call; any other failure shows its last line.
    why=$(grep -m1 -i "synchroniz" "$DIR/$run.out" || tail -1 "$DIR/$run.out")
    echo "| facekit, sync debug \`error\` | $arch | $size | failed (exit $rc): ${why:0:200} | | | $GPU |"
  fi
}

if [ "$DEVICE" = cuda ]; then
  GPU=$("$PY" -c 'import torch; print(torch.cuda.get_device_name(0))')
else
  GPU="cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
fi
echo "$("$BIN" --version 2>/dev/null | head -1), PyTorch $("$PY" -c 'import torch; print(torch.__version__)'), $(date -u +%F), $DEVICE, $PREC, $FORMAT, batch $BATCH, $STEPS steps (log windows of $LOG_EVERY, first left out)"
echo
echo "| runner | network | input | images/s | data wait ms/step | peak memory GiB | device |"
echo "|---|---|---|---|---|---|---|"
for r in "${RUNS[@]}"; do
  set -- $r
  facekit_row "$1" "$2" "$3" synthetic --synthetic
  facekit_row "$1" "$2" "$3" "shards ($3)"
  pytorch_row "$1" "$2" off
  sync_row "$1" "$2" "$3"
  if [ "$DEVICE" = cuda ]; then pytorch_row "$1" "$2" error; fi
done

# IJB: the whole `facekit eval ijb` command over DATA_DIR/IJBC with the first row's network.
set -- ${RUNS[0]}
IJB_RUN="$DIR/$1-$2-shards ($3)"
if [ -f "$DATA/IJBC/meta/ijbc_name_5pts_score.txt" ] && [ -f "$IJB_RUN/net.json" ]; then
  FACES=$(wc -l < "$DATA/IJBC/meta/ijbc_name_5pts_score.txt")
  rm -rf "$DIR/ijb"
  START=$(date +%s.%N)
  rc=0
  peak_of "$BIN" eval ijb "$DATA/IJBC" --model "$IJB_RUN" --checkpoint last --device "$DEVICE" \
    --batch-size "$BATCH" -o "$DIR/ijb" > "$DIR/ijb.out" 2>&1 || rc=$?
  SECS=$(echo "$(date +%s.%N) - $START" | bc -l)
  if [ "$rc" = 0 ]; then
    echo "| facekit eval ijb, $FACES faces + mirrors, whole command | $1 | $2 | $(echo "scale=1; $FACES / $SECS" | bc -l) faces/s | | $PEAK | $GPU |"
  else
    echo "| facekit eval ijb | $1 | $2 | failed (exit $rc): $(tail -1 "$DIR/ijb.out" | cut -c1-160) | | | $GPU |"
  fi
else
  echo "| facekit eval ijb | $1 | $2 | not run: no $DATA/IJBC (scripts/make-gpu-bench-data.sh) or no trained run | | | $GPU |"
fi
