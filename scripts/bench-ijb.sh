#!/usr/bin/env bash
# Speed of `facekit eval ijb` against the method of insightface's recognition/arcface_torch/eval_ijbc.py
# on the CPU, reported per 10,000 faces. The set: DISTINCT LFW photos (default 100, the first photo
# of each lfw100 person; five points and faceness score from MTCNN, .venv-mtcnn) listed FACES times
# over (default 400) in IJB-C's layout, four faces a template, two a media, one 1:1 pair per template.
# The network: ARCH (default mbf, MobileFaceNet) at 112 px after one training step on raw_images/
# (speed does not depend on the weights), exported to TorchScript for the reference.
#
# facekit: the whole command, a fresh output folder (nothing cached), wall time; and a rerun that
# reuses the cached features. The reference, eval_ijbc.py's method in scripts/ijb_reference.py, in
# two venvs because no venv here has both OpenCV and torch: `chips` (cv2.imread, scikit-image
# SimilarityTransform, cv2.warpAffine, BGR -> RGB) in .venv-cv, `embed` (batches of BATCH, image and
# mirror through the TorchScript network, summed) in .venv, `protocol` (numpy pooling, scikit-learn
# ROC) in .venv; each stage's own seconds (imports excluded) and the stages' wall time with Python's
# start and imports. Both sides get THREADS threads (default 2: OMP_NUM_THREADS, RAYON_NUM_THREADS,
# torch.set_num_threads, cv2.setNumThreads).
#
# usage: scripts/bench-ijb.sh [FACES] [DISTINCT]   (env: FACEKIT_BIN, THREADS, ARCH, BATCH, BENCH_DIR)
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f .facekit.env ] && source .facekit.env
FACES=${1:-400}
DISTINCT=${2:-100}
THREADS=${THREADS:-2}
ARCH=${ARCH:-mbf}
BATCH=${BATCH:-64}
export THREADS OMP_NUM_THREADS=$THREADS RAYON_NUM_THREADS=$THREADS
DIR=${BENCH_DIR:-$(mktemp -d /tmp/facekit-bench-ijb.XXXX)}
ROOT="$DIR/IJBC"
if [ -z "${FACEKIT_BIN:-}" ]; then
  cargo build --release --bin facekit
  FACEKIT_BIN=${CARGO_TARGET_DIR:-target}/release/facekit
fi

# The set.
[ -f "$ROOT/meta/ijbc_template_pair_label.txt" ] || scripts/make-ijb-set.sh "$ROOT" "$FACES" "$DISTINCT"

# The network.
if [ ! -f "$DIR/exp/model.torchscript.pt" ]; then
  [ -f "$DIR/training/demo.manifest.json" ] || "$FACEKIT_BIN" pack raw_images -o "$DIR/training/demo" --size 112 >/dev/null 2>&1
  "$FACEKIT_BIN" train FR --arch "$ARCH" --image-size 112 --batch-size 8 --max-steps 1 --workers 1 --device cpu \
    --data-dir "$DIR/training" --train-sets demo --model-dir "$DIR/Model" --run-name r --checkpoint-every 0 >/dev/null 2>&1
  "$FACEKIT_BIN" export --model "$DIR/Model/r" --checkpoint last --format torchscript -o "$DIR/exp" >/dev/null
fi

t() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>"$DIR/last.err"; e=$(date +%s.%N); echo "$e - $s" | bc -l; }
stage() { grep -o 'seconds: [0-9.]*' "$DIR/last.err" | cut -d' ' -f2; }
per10k() { echo "scale=1; $1 * 10000 / $FACES" | bc -l; }

LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
rm -rf "$DIR/out"
FK=$(t "$FACEKIT_BIN" eval ijb "$ROOT" --model "$DIR/Model/r" --checkpoint last --device cpu --batch-size "$BATCH" -o "$DIR/out")
FK_CACHED=$(t "$FACEKIT_BIN" eval ijb "$ROOT" --model "$DIR/Model/r" --checkpoint last --device cpu --batch-size "$BATCH" -o "$DIR/out")

mkdir -p "$DIR/ref"
W_CHIPS=$(t .venv-cv/bin/python scripts/ijb_reference.py chips "$ROOT" IJBC 112 "$DIR/ref/chips.npy" all); S_CHIPS=$(stage)
W_EMBED=$(t .venv/bin/python scripts/ijb_reference.py embed "$DIR/exp/model.torchscript.pt" "$DIR/ref/chips.npy" "$DIR/ref/features.npy" "$BATCH"); S_EMBED=$(stage)
echo '{"failed": []}' > "$DIR/ref/features.json"
W_PROTO=$(t .venv/bin/python scripts/ijb_reference.py protocol "$ROOT" IJBC "$DIR/ref"); S_PROTO=$(stage)
S_REF=$(echo "$S_CHIPS + $S_EMBED + $S_PROTO" | bc -l)
W_REF=$(echo "$W_CHIPS + $W_EMBED + $W_PROTO" | bc -l)

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(date -u '+%F %H:%M') UTC; load average before the runs: $LOAD, after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "set: $FACES faces ($DISTINCT distinct LFW photos), network $ARCH at 112, batch $BATCH, $THREADS threads"
printf '| run | seconds | seconds per 10,000 faces |\n|---|---|---|\n'
printf '| facekit eval ijb (whole command, nothing cached) | %.2f | %s |\n' "$FK" "$(per10k "$FK")"
printf '| facekit eval ijb (rerun, features cached) | %.2f | %s |\n' "$FK_CACHED" "$(per10k "$FK_CACHED")"
printf '| eval_ijbc.py method: read + align (cv2, skimage) | %.2f | %s |\n' "$S_CHIPS" "$(per10k "$S_CHIPS")"
printf '| eval_ijbc.py method: network, image + mirror (TorchScript) | %.2f | %s |\n' "$S_EMBED" "$(per10k "$S_EMBED")"
printf '| eval_ijbc.py method: pooling and ROC (numpy, sklearn) | %.2f | %s |\n' "$S_PROTO" "$(per10k "$S_PROTO")"
printf '| eval_ijbc.py method: the three stages | %.2f | %s |\n' "$S_REF" "$(per10k "$S_REF")"
printf '| eval_ijbc.py method: the three processes, Python start and imports included | %.2f | %s |\n' "$W_REF" "$(per10k "$W_REF")"
