#!/usr/bin/env bash
# Cost of dlib's plateau rule (issue 4): facekit's Rust port vs dlib's own C++ counter through its
# Python binding, same machine, same run. Both count steps without decrease over 2000 losses (dlib's
# default window); facekit also reports the amortised per-step cost of DlibPlateau::observe.
#
# usage: scripts/bench-schedule.sh [steps]
set -euo pipefail
cd "$(dirname "$0")/.."
source .facekit.env
STEPS="${1:-200000}"
PY="${PYTHON:-$PWD/.venv/bin/python}"

cargo build --release -p facekit-train --example schedule_bench
${CARGO_TARGET_DIR:-target}/release/examples/schedule_bench "$STEPS"
"$PY" - <<'PY'
import json, random, time
import dlib
random.seed(1)
window = [1.0 + 0.1 * random.random() for _ in range(2000)]
reps = 200
t = time.perf_counter()
for _ in range(reps):
    dlib.count_steps_without_decrease(window)
us = (time.perf_counter() - t) * 1e6 / reps
print(json.dumps({"impl": "dlib (C++ via Python binding)", "count_2000_us": round(us, 1)}))
PY
