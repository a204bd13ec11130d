#!/usr/bin/env bash
# Loader throughput (issues 6 and 22), same JPEG bytes, same machine, same run. Packs lfw100
# (2,513 photos) resized to 224x224 and to 112x112 (stored 112 chips), JPEG q95, no dlib, then
# times, at each size, with 1 and 2 threads (workers):
#   - raw decode of the payloads alone, libjpeg-turbo and zune-jpeg (`loader_bench raw`): the
#     ceiling the loader is measured against;
#   - facekit's loader (decode + flip into the batch slot, shuffled, batch 128);
#   - Pillow in one process (DataLoader with 0 workers) and a PyTorch DataLoader with worker
#     processes (`scripts/loader_reference.py`).
# "Per core" is images per CPU-second of the whole process (threads and worker processes
# included): wall time on a shared 2-core box mostly measures the neighbours. It also checks how
# far libjpeg-turbo's pixels (the loader's) are from zune-jpeg's and from Pillow's.
#
# With CROP,JITTER,GREY (for example 0.1,0.2,0.1) it instead measures the optional augmentations
# (--random-crop, --color-jitter, --grey-prob) at 224: flip only against flip + those, in facekit
# and in PyTorch + Pillow + the same torchvision transforms; one JSON line per run.
#
# `scripts/bench-loader.sh ooc MEMORY_MB COPIES` measures out of core instead: COPIES copies of
# the 224 set (as new identities; at least twice MEMORY_MB), the loading process in a memory
# cgroup of MEMORY_MB (systemd-run's scope, or a cgroup v1/v2 child made here, as root), each
# shard dropped from the page cache before each run: images/s of the global order, of the
# quasi-random order with read-ahead, and MB/s of `cat` over the shards.
#
# usage: scripts/bench-loader.sh [epochs] [CROP,JITTER,GREY]
#        scripts/bench-loader.sh ooc MEMORY_MB COPIES [epochs]
#        (env: FACEKIT_SHARED_DATA, BENCH_DIR, PYTHON, REPEAT; LOADER_BENCH_BIN: a loader_bench already
#        built with optimisations, instead of building the release one)
set -euo pipefail
cd "$(dirname "$0")/.."
source .facekit.env
DATA="${FACEKIT_SHARED_DATA:-$PWD/../shared/data}"
PY="${PYTHON:-$PWD/.venv/bin/python}"
BATCH=128

BIN="${LOADER_BENCH_BIN:-}"
if [ -z "$BIN" ]; then
  cargo build --release -p facekit-data --example loader_bench
  BIN=${CARGO_TARGET_DIR:-target}/release/examples/loader_bench
fi

# Runs "$@" in a memory cgroup of $MEM_MB MiB: systemd-run's scope where systemd runs, else a
# child cgroup (v2, or v1's memory controller) made next to this shell's, removed afterwards.
limited() {
  if systemd-run --scope -q -p MemoryMax=1G true 2>/dev/null; then
    systemd-run --scope -q -p MemoryMax="${MEM_MB}M" -p MemorySwapMax=0 -- "$@"
    return
  fi
  local cg
  if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    cg="/sys/fs/cgroup$(sed -n 's/^0:://p' /proc/self/cgroup)/facekit-bench-$$"
    mkdir "$cg" && echo "${MEM_MB}M" > "$cg/memory.max"
  else
    cg="/sys/fs/cgroup/memory$(awk -F: '$2 ~ /(^|,)memory(,|$)/ {print $3}' /proc/self/cgroup)/facekit-bench-$$"
    mkdir "$cg" && echo $((MEM_MB << 20)) > "$cg/memory.limit_in_bytes"
  fi
  local rc=0
  sh -c 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"' sh "$cg" "$@" || rc=$?
  rmdir "$cg"
  return $rc
}

# Drops the shards from the page cache (only these files: the box is shared).
drop_shards() {
  "$PY" -c 'import os, sys
for f in sys.argv[1:]:
    fd = os.open(f, os.O_RDONLY); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED); os.close(fd)' "$DIR"/bench224-*.shard
}

if [ "${1:-}" = ooc ]; then
  MEM_MB="$2" COPIES="$3" EPOCHS="${4:-1}"
  DIR="${BENCH_DIR:-$(mktemp -d)}"
  [ -f "$DIR/bench224.manifest.json" ] || "$BIN" pack "$DATA/lfw100" "$DIR" "$COPIES"
  BYTES=$(cat "$DIR"/bench224-*.shard | wc -c)
  echo "dataset: $((BYTES >> 20)) MiB in $(ls "$DIR"/bench224-*.shard | wc -l) shards; memory limit: $MEM_MB MiB" >&2
  [ "$BYTES" -ge $((2 * MEM_MB << 20)) ] || { echo "the dataset must be at least twice the memory limit: more copies" >&2; exit 2; }
  # Half the memory for open pages (8 MiB each); the rest holds batch slots and the program.
  WINDOW=$((MEM_MB / 16))
  drop_shards
  t0=$(date +%s.%N); limited cat "$DIR"/bench224-*.shard > /dev/null; t1=$(date +%s.%N)
  echo "{\"impl\":\"cat\",\"mib_per_s\":$(echo "($BYTES / 1048576) / ($t1 - $t0)" | bc -l | cut -c1-7)}"
  drop_shards
  LOADER_BENCH_WARM=0 limited "$BIN" run "$DIR/bench224" 2 "$EPOCHS" "$BATCH" 224
  drop_shards
  LOADER_BENCH_WARM=0 LOADER_BENCH_ORDER="quasi:$WINDOW" LOADER_BENCH_FETCH=read-ahead limited "$BIN" run "$DIR/bench224" 2 "$EPOCHS" "$BATCH" 224
  drop_shards
  LOADER_BENCH_WARM=0 LOADER_BENCH_ORDER="quasi:$WINDOW" limited "$BIN" run "$DIR/bench224" 2 "$EPOCHS" "$BATCH" 224
  exit 0
fi

EPOCHS="${1:-5}"
DIR="${BENCH_DIR:-$(mktemp -d)}"
[ -f "$DIR/bench224.manifest.json" ] || "$BIN" pack "$DATA/lfw100" "$DIR"

if [ -n "${2:-}" ]; then
  "$BIN" run "$DIR/bench224" 1 "$EPOCHS" "$BATCH" 224
  LOADER_BENCH_AUGMENT="$2" "$BIN" run "$DIR/bench224" 1 "$EPOCHS" "$BATCH" 224
  "$PY" scripts/loader_reference.py "$DIR/payloads224" 0 "$EPOCHS" "$BATCH"
  "$PY" scripts/loader_reference.py "$DIR/payloads224" 0 "$EPOCHS" "$BATCH" "$2"
  exit 0
fi

for size in 224 112; do
  "$BIN" compare "$DIR/payloads$size" "$DIR/turbo$size.raw"
  "$PY" scripts/loader_reference.py --pixels "$DIR/payloads$size" "$DIR/turbo$size.raw"
done

# Each configuration runs REPEAT times, interleaved, and the table shows medians: the box is
# shared, and a neighbour's burst moves a single run by 20% or more.
REPEAT="${REPEAT:-3}"
results=()
for rep in $(seq "$REPEAT"); do
  for size in 224 112; do
    for w in 1 2; do
      results+=("$("$BIN" raw "$DIR/payloads$size" "$w" "$EPOCHS" turbo)")
      results+=("$("$BIN" run "$DIR/bench$size" "$w" "$EPOCHS" "$BATCH" "$size")")
      results+=("$("$BIN" raw "$DIR/payloads$size" "$w" "$EPOCHS" zune)")
      results+=("$("$PY" scripts/loader_reference.py "$DIR/payloads$size" "$w" "$EPOCHS" "$BATCH")")
    done
    results+=("$("$PY" scripts/loader_reference.py "$DIR/payloads$size" 0 "$EPOCHS" "$BATCH")")
  done
done

printf '%s\n' "${results[@]}"
"$PY" - "${results[@]}" <<'PY'
import json, statistics, sys
rows = [json.loads(a) for a in sys.argv[1:]]
names = {"facekit": "facekit loader", "raw-turbo": "raw libjpeg-turbo decode", "raw-zune": "raw zune-jpeg decode",
         "pytorch+pillow": "PyTorch DataLoader + Pillow", "pillow": "Pillow, one process"}
runs = {}
for r in rows:
    runs.setdefault((r["size"], r["impl"], r["workers"]), []).append(r)
med = {k: {f: statistics.median(x[f] for x in v) for f in ("images_per_s", "images_per_cpu_s")} for k, v in runs.items()}
print(f"\n{len(next(iter(runs.values())))} runs each, medians")
print("| size | decoder / loader | threads | wall images/s | images per CPU-second | vs raw libjpeg-turbo, per CPU-second | wall, 2 threads vs 1 |")
print("|---|---|---|---|---|---|---|")
for (size, impl, w), m in sorted(med.items(), key=lambda kv: (-kv[0][0], list(names).index(kv[0][1]), kv[0][2])):
    base = med.get((size, "raw-turbo", max(w, 1)))
    ratio = f'{m["images_per_cpu_s"] / base["images_per_cpu_s"]:.2f}' if base else ""
    one = med.get((size, impl, 1))
    scale = f'{m["images_per_s"] / one["images_per_s"]:.2f}x' if w == 2 and one else ""
    who = "main process" if w == 0 else w
    print(f'| {size} | {names[impl]} | {who} | {m["images_per_s"]:.0f} | {m["images_per_cpu_s"]:.0f} | {ratio} | {scale} |')
PY
