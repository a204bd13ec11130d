#!/usr/bin/env bash
# The quick start's main job on the sample data: set up what is missing, build, pack raw_images/
# into training/demo (with a held-out training/demo.valid), verify every record, train briefly on
# whatever device is there, and print the results.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
source .facekit.env
cargo build --release --quiet
FK=${CARGO_TARGET_DIR:-target}/release/facekit

echo "== pack raw_images/ -> training/demo"
# --overwrite: a second demo replaces the first one's dataset (only once the new one is complete).
$FK pack raw_images -o training/demo --valid-fraction 0.15 --overwrite

echo "== verify"
$FK verify-shard --decode training/demo training/demo.valid

echo "== train"
if [ "$(.venv/bin/python -c 'import torch; print(torch.cuda.is_available())')" = True ]; then
  # A CUDA machine: the real network at full size.
  TRAIN_ARGS=(--arch resnet50 --image-size 224 --batch-size 50 --max-steps 1000 --valid-every 250)
else
  # CPU only: the tiny variant of the same network, so the run takes minutes, not days.
  TRAIN_ARGS=(--arch tiny --image-size 112 --batch-size 32 --lr 0.05 --max-steps 200 --valid-every 100)
fi
RUN=demo-$(date +%Y%m%d-%H%M%S)
$FK train FR --train-sets demo --valid-sets demo.valid --run-name "$RUN" --log-every 25 "${TRAIN_ARGS[@]}"

echo "== evaluate: all-pairs verification on the held-out faces"
$FK eval verify --model "Model/$RUN" --dataset demo.valid -o "eval/$RUN"
echo "== results in Model/$RUN/ (train_log.jsonl, curves.png, checkpoints/) and eval/$RUN/"
