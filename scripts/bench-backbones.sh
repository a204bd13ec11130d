#!/usr/bin/env bash
# CPU training speed of the backbones (issue 15): IR-ResNet50 at 112 against torchvision's ResNet-50
# at 112 and 224, each in `facekit train` and in PyTorch eager (scripts/bench_train_reference.py:
# the same network, head, ArcFace loss and SGD on synthetic input). One libtorch thread, fp32,
# contiguous memory, batch BATCH, on training/demo (made by scripts/demo.sh); facekit's figure is
# the harmonic mean of its log windows after the first (start-up excluded), PyTorch's the steps
# after its warm-up steps. Runs alternate facekit / PyTorch per network so that load drifts hit
# both sides of each ratio alike; each run first waits (at most 3 minutes) for the 1-minute load
# average to drop below 1.
#
# usage: scripts/bench-backbones.sh [steps] [batch]   (env: BENCH_DIR, FACEKIT_BIN, PYTHON)
set -euo pipefail
cd "$(dirname "$0")/.."
source .facekit.env
STEPS="${1:-6}"
BATCH="${2:-8}"
LOG_EVERY=2
PY="${PYTHON:-.venv/bin/python}"
export OMP_NUM_THREADS=1
DIR="${BENCH_DIR:-$(mktemp -d)}"
[ -f training/demo.manifest.json ] || { echo "training/demo is missing: run scripts/demo.sh first" >&2; exit 2; }
CLASSES=$("$PY" -c 'import json; print(json.load(open("training/demo.manifest.json"))["classes"])')

if [ -z "${FACEKIT_BIN:-}" ]; then
  cargo build --release --no-default-features --features torch
  FACEKIT_BIN=${CARGO_TARGET_DIR:-target}/release/facekit
fi

quiet() {
  for _ in $(seq 18); do
    awk '{exit !($1 < 1.0)}' /proc/loadavg && break
    sleep 10
  done
  cut -d' ' -f1 /proc/loadavg
}

printf '| network | input | facekit ms/image | PyTorch eager ms/image | facekit / PyTorch | load average before (facekit, PyTorch) |\n|---|---|---|---|---|---|\n'
for run in "iresnet50 112" "resnet50 112" "resnet50 224"; do
  set -- $run
  load_f=$(quiet)
  "$FACEKIT_BIN" train FR --train-sets demo --data-dir training --arch "$1" --image-size "$2" \
    --batch-size "$BATCH" --max-steps "$STEPS" --log-every "$LOG_EVERY" --valid-every 0 --checkpoint-every 0 \
    --device cpu --workers 1 --threads 1 --precision fp32 --memory-format contiguous \
    --model-dir "$DIR" --run-name "$1-$2" --overwrite >/dev/null 2>&1
  load_p=$(quiet)
  "$PY" scripts/bench_train_reference.py --arch "$1" --image-size "$2" --batch-size "$BATCH" --classes "$CLASSES" \
    --precision fp32 --device cpu --threads 1 --steps $((STEPS - LOG_EVERY)) --warmup "$LOG_EVERY" > "$DIR/$1-$2.torch.json"
  "$PY" - "$DIR/$1-$2/train_log.jsonl" "$DIR/$1-$2.torch.json" "$1" "$2" "$load_f" "$load_p" <<'PY'
import json, sys
log, ref, arch, side, load_f, load_p = sys.argv[1:]
rows = [json.loads(l) for l in open(log) if '"images_per_second"' in l]
ips = [r["images_per_second"] for r in rows[1:]]
ours = len(ips) / sum(1 / x for x in ips)  # equal step counts per window: harmonic mean
theirs = json.load(open(ref))["images_per_s"]
print(f"| {arch} | {side} | {1000 / ours:.0f} | {1000 / theirs:.0f} | {theirs / ours:.2f} | {load_f}, {load_p} |")
PY
done
