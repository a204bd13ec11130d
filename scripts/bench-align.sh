#!/usr/bin/env bash
# Alignment throughput, one thread, facekit (release) vs Python dlib on the same LFW photos.
# Usage: scripts/bench-align.sh [N images, default 500]
set -euo pipefail
cd "$(dirname "$0")/.."
source .facekit.env
N=${1:-500}
DATA=${FACEKIT_SHARED_DATA:-../shared/data}
mapfile -t IMGS < <(find "$DATA/lfw100" -name '*.jpg' | sort | head -n "$N")
cargo build --release -p facekit-pack --features dlib --example align_bench -q
echo "== facekit (release, 1 thread)"
${CARGO_TARGET_DIR:-target}/release/examples/align_bench "${IMGS[@]}"
echo "== Python dlib $(.venv/bin/python -c 'import dlib; print(dlib.__version__)') (1 thread)"
.venv/bin/python - "$FACEKIT_MODELS" "${IMGS[@]}" <<'PY'
import sys, time, dlib
models, paths = sys.argv[1], sys.argv[2:]
t = time.perf_counter(); imgs = [dlib.load_rgb_image(p) for p in paths]
print(f"decode {time.perf_counter() - t:.3f} {len(imgs)}")
det = dlib.get_frontal_face_detector()
pred = dlib.shape_predictor(models + "/shape_predictor_5_face_landmarks.dat")
t = time.perf_counter(); shapes = []
for img in imgs:
    d = list(det(img, 0)) or list(det(img, 1))
    if d:
        s = pred(img, max(d, key=lambda r: r.area())); dlib.get_face_chip(img, s, size=224, padding=0.25)
        shapes.append((img, s))
print(f"detect+landmarks+chip {time.perf_counter() - t:.3f} {len(imgs)}")
t = time.perf_counter()
for img, s in shapes: dlib.get_face_chip(img, s, size=224, padding=0.25)
print(f"chip_only {time.perf_counter() - t:.3f} {len(shapes)}")
PY
