#!/usr/bin/env bash
# Benchmark of `facekit verify-shard` throughput (GB/s per core) on a synthetic 2 GB dataset, beside a
# reference: Python's zlib.crc32 over the same files (what a hand-written Python check would do).
# Usage: scripts/bench-verify.sh [SIZE_MB]   (page cache warm; one thread for per-core figures)
set -euo pipefail
cd "$(dirname "$0")/.."
source .facekit.env
SIZE_MB=${1:-2048}
DIR=$(mktemp -d /tmp/facekit-bench-verify.XXXX); trap 'rm -rf "$DIR"' EXIT
cargo build --release --quiet --no-default-features --bin facekit
cargo build --release --quiet -p facekit-shard --example synthetic_dataset
${CARGO_TARGET_DIR:-target}/release/examples/synthetic_dataset "$DIR/synth" "$SIZE_MB" 512
BYTES=$(cat "$DIR"/synth-*.shard | wc -c)
cat "$DIR"/synth-*.shard > /dev/null   # warm the page cache
t() { local s e; s=$(date +%s.%N); "$@" > /dev/null; e=$(date +%s.%N); echo "$e - $s" | bc -l; }
T_FK1=$(RAYON_NUM_THREADS=1 t ${CARGO_TARGET_DIR:-target}/release/facekit verify-shard "$DIR/synth")
T_FK2=$(RAYON_NUM_THREADS=2 t ${CARGO_TARGET_DIR:-target}/release/facekit verify-shard "$DIR/synth")
T_PY=$(t .venv/bin/python -c '
import sys, zlib, glob
for p in sorted(glob.glob(sys.argv[1] + "-*.shard")):
    c = 0
    with open(p, "rb") as f:
        while (b := f.read(1 << 24)):
            c = zlib.crc32(b, c)
' "$DIR/synth")
gbs() { echo "scale=2; $BYTES / $1 / 1000000000" | bc -l; }
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(date -u +%F)"
echo "data: $BYTES bytes in $(ls "$DIR"/synth-*.shard | wc -l) shards"
printf '| run | seconds | GB/s |\n|---|---|---|\n'
printf '| facekit verify-shard, 1 thread | %.2f | %s |\n' "$T_FK1" "$(gbs "$T_FK1")"
printf '| facekit verify-shard, 2 threads | %.2f | %s |\n' "$T_FK2" "$(gbs "$T_FK2")"
printf '| Python zlib.crc32 over the files, 1 thread | %.2f | %s |\n' "$T_PY" "$(gbs "$T_PY")"
