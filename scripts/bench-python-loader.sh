#!/usr/bin/env bash
# The Python package's loader against PyTorch's DataLoader + Pillow (0, 1, 2 workers) and raw
# decode of the same JPEG records, same machine, same run (issue 23; docs/PERFORMANCE.md,
# "Python (issue 23)"). Uses the wheel scripts/setup.sh installed into .venv.
#
# usage: scripts/bench-python-loader.sh [repeat]   (env: FACEKIT_SHARED_DATA, BENCH_DIR)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${FACEKIT_SHARED_DATA:-$PWD/../shared/data}"
DIR="${BENCH_DIR:-${TMPDIR:-/tmp}/facekit-bench-python}"
.venv/bin/python scripts/bench_python_loader.py "$DATA/lfw100" "$DIR" "${1:-1}"
