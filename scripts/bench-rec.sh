#!/usr/bin/env bash
# Benchmark of `facekit import rec` and `facekit export rec` beside MXNet's own Python reader
# looping over the same .rec (MXIndexedRecordIO.read_idx + unpack, with and without a decode), on
# an insightface-layout .rec of real lfw100 faces written by MXNet.
# Usage: scripts/bench-rec.sh [COPIES]   (COPIES x 2,513 records; page cache warm)
set -euo pipefail
cd "$(dirname "$0")/.."
source .facekit.env
COPIES=${1:-4}
DIR=$(mktemp -d /tmp/facekit-bench-rec.XXXX); trap 'rm -rf "$DIR"' EXIT
cargo build --release --quiet --bin facekit
FK=${CARGO_TARGET_DIR:-target}/release/facekit
MX=.venv-mxnet/bin/python
# 112x112 chips of every lfw100 photo (label = person), COPIES times over.
.venv/bin/python - "$(realpath ../shared/data/lfw100)" "$DIR/chips" "$COPIES" > "$DIR/list.tsv" <<'PY'
import os, sys
from PIL import Image
src, out, copies = sys.argv[1], sys.argv[2], int(sys.argv[3])
os.makedirs(out, exist_ok=True)
people = sorted(os.listdir(src))
for c in range(copies):
    for label, p in enumerate(people):
        for name in sorted(os.listdir(os.path.join(src, p))):
            path = os.path.join(out, "%d_%s" % (c, name))
            if c == 0:
                Image.open(os.path.join(src, p, name)).convert("RGB").crop((50, 50, 200, 200)).resize((112, 112)).save(path, quality=90)
            else:
                os.link(os.path.join(out, "0_%s" % name), path)
            print("%s\t%d" % (path, label + c * len(people)))
PY
$MX scripts/rec_reference.py write --layout insightface --list "$DIR/list.tsv" --out "$DIR/rec"
RECORDS=$(wc -l < "$DIR/list.tsv")
BYTES=$(stat -c %s "$DIR/rec/train.rec")
cat "$DIR/rec/train.rec" > /dev/null
# Seconds inside each program (start-up excluded on both sides: libtorch's load, mxnet's import).
jq_s() { .venv/bin/python -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$@"; }
$FK import rec "$DIR/rec" -o "$DIR/out/i1" --threads 1 --quiet > /dev/null
T_I1=$(jq_s "$DIR/out/i1.report.json" elapsed_s)
$FK import rec "$DIR/rec" -o "$DIR/out/i2" --threads 2 --quiet > /dev/null
T_I2=$(jq_s "$DIR/out/i2.report.json" elapsed_s)
$FK export rec "$DIR/out/i1" -o "$DIR/exp" --quiet --json --threads 1 > "$DIR/exp.json"
T_E=$(jq_s "$DIR/exp.json" elapsed_s)
$MX scripts/rec_reference.py bench --dir "$DIR/rec" > "$DIR/mx.json"
T_MX=$(jq_s "$DIR/mx.json" seconds)
$MX scripts/rec_reference.py bench --dir "$DIR/rec" --decode > "$DIR/mxd.json"
T_MXD=$(jq_s "$DIR/mxd.json" seconds)
rate() { echo "scale=0; $RECORDS / $1" | bc -l; }
mbs() { echo "scale=1; $BYTES / $1 / 1000000" | bc -l; }
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(date -u '+%F %H:%M UTC')"
echo "data: $RECORDS records of 112x112 JPEG, $BYTES bytes of .rec (insightface layout, written by mxnet 1.9.1)"
printf '| run | seconds | records/s | MB/s |\n|---|---|---|---|\n'
printf '| facekit import rec, 1 thread (full decode check, shards written) | %.2f | %s | %s |\n' "$T_I1" "$(rate "$T_I1")" "$(mbs "$T_I1")"
printf '| facekit import rec, 2 threads | %.2f | %s | %s |\n' "$T_I2" "$(rate "$T_I2")" "$(mbs "$T_I2")"
printf '| facekit export rec, 1 thread (shards -> .rec/.idx/property) | %.2f | %s | %s |\n' "$T_E" "$(rate "$T_E")" "$(mbs "$T_E")"
printf '| MXNet read_idx + unpack, Python loop (no decode) | %.2f | %s | %s |\n' "$T_MX" "$(rate "$T_MX")" "$(mbs "$T_MX")"
printf '| MXNet read_idx + unpack + mx.image.imdecode | %.2f | %s | %s |\n' "$T_MXD" "$(rate "$T_MXD")" "$(mbs "$T_MXD")"
