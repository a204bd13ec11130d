#!/usr/bin/env bash
# Which compiler flags make dlib 19.24's HOG face detector (Debian libdlib-dev headers, the code
# facekit compiles in) as fast as dlib-bin's Python wheel? Builds scripts/dlib_hog_flags.cpp with
# each flag set and times it against Python dlib on the same photos, interleaved, twice.
# Usage: scripts/bench-dlib-flags.sh [N images, default 300]   (needs scripts/setup.sh done)
set -euo pipefail
cd "$(dirname "$0")/.."
source .facekit.env
N=${1:-300}
WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
find "${FACEKIT_SHARED_DATA:-../shared/data}/lfw100" -name '*.jpg' | sort | head -n "$N" > "$WORK/list"
declare -A FLAGS=([sse2]="" [sse4.2]="-msse4.2" [avx]="-mavx" [avx2]="-mavx2" [avx2-fma]="-mavx2 -mfma")
for k in "${!FLAGS[@]}"; do
  g++ -O3 ${FLAGS[$k]} -std=c++14 scripts/dlib_hog_flags.cpp -o "$WORK/hog-$k" -ldlib -lcblas -llapack
done
cat > "$WORK/py.py" <<'PY'
import sys, time, dlib
imgs = [dlib.load_rgb_image(l.strip()) for l in open(sys.argv[1])]
det = dlib.get_frontal_face_detector()
for rep in range(2):
    t = time.perf_counter(); n = sum(len(det(i, 0)) for i in imgs)
print(f"detect1x {time.perf_counter() - t:.3f} {len(imgs)} faces {n}")
PY
echo "$(date -u +%F) $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), load $(cut -d' ' -f1-3 /proc/loadavg), $N photos, seconds for one pass"
for round in 1 2; do
  for k in sse2 sse4.2 avx avx2 avx2-fma; do echo "g++ -O3 ${FLAGS[$k]:-(x86-64)}: $("$WORK/hog-$k" "$WORK/list" | tail -1)"; done
  echo "Python dlib $(.venv/bin/python -c 'import dlib; print(dlib.__version__)'): $(.venv/bin/python "$WORK/py.py" "$WORK/list")"
done
