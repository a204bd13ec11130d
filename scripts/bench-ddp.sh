#!/usr/bin/env bash
# Per-step all-reduce overhead of data-parallel training, 2 Gloo ranks on the CPU (127.0.0.1):
# facekit's DDP (train/src/dist: PyTorch's C++ Reducer through the c10d shim,
# train/examples/bench_ddp.rs) against PyTorch's own DistributedDataParallel
# (scripts/bench_ddp_reference.py), same network, batch, loss and threads. Each run is two
# processes (ranks 0 and 1); inside a run, rounds of steps without DDP alternate with rounds with
# it, so overhead = median ms/step with DDP - median without, measured under the same load. Runs
# alternate facekit / PyTorch / PyTorch given facekit's bucket caps (see
# bench_ddp_reference.py --buckets facekit), in reversed order every other repetition, so that
# load drifts hit every side of a ratio alike. Only ratios within a repetition mean anything on a
# shared machine.
#
# usage: scripts/bench-ddp.sh [repetitions] [rounds] [steps]
#   env: BENCH_DIR (results, default a temp dir), PROFILE (dev or release, default dev: its
#   dependencies are optimised as in release and it is what the dev box has built), PYTHON,
#   NETS (default "tiny resnet50"), TINY_BATCH (8), R50_BATCH (2), IMAGE_SIZE (32)
set -euo pipefail
cd "$(dirname "$0")/.."
source .facekit.env
REPS="${1:-3}"
ROUNDS="${2:-5}"
STEPS="${3:-5}"
PROFILE="${PROFILE:-dev}"
PY="${PYTHON:-.venv/bin/python}"
NETS="${NETS:-tiny resnet50}"
IMAGE_SIZE="${IMAGE_SIZE:-32}"
DIR="${BENCH_DIR:-$(mktemp -d)}"
mkdir -p "$DIR"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
RESULTS="$DIR/results.jsonl"
: > "$RESULTS"

cargo build --profile "$PROFILE" -p facekit-train --example bench_ddp
OUTDIR=$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")
BIN="${CARGO_TARGET_DIR:-target}/$OUTDIR/examples/bench_ddp"

# Both ranks of one run; rank 0's JSON line, tagged with the repetition and the load before it,
# is appended to $RESULTS.
run_pair() {
  local rep=$1 impl=$2 net=$3 batch=$4
  local port_file="$DIR/port.$rep.$impl.$net" load
  # A port left by an earlier run in the same BENCH_DIR would send rank 1 to a dead store.
  rm -f "$port_file" "$port_file.tmp"
  load=$(cut -d' ' -f1 /proc/loadavg)
  local cmd
  case $impl in
    facekit) cmd=("$BIN") ;;
    pytorch) cmd=("$PY" scripts/bench_ddp_reference.py --buckets ddp) ;;
    pytorch-fk) cmd=("$PY" scripts/bench_ddp_reference.py --buckets facekit) ;;
  esac
  local args=(--world 2 --port-file "$port_file" --net "$net" --batch "$batch" --image-size "$IMAGE_SIZE" --rounds "$ROUNDS" --steps "$STEPS" --threads 1)
  "${cmd[@]}" --rank 1 "${args[@]}" > "$DIR/rank1.log" 2>&1 &
  local pid1=$!
  if ! "${cmd[@]}" --rank 0 "${args[@]}" > "$DIR/rank0.out" 2> "$DIR/rank0.log"; then
    cat "$DIR/rank0.log" "$DIR/rank1.log" >&2
    kill "$pid1" 2>/dev/null || true
    exit 1
  fi
  wait "$pid1" || { cat "$DIR/rank1.log" >&2; exit 1; }
  "$PY" -c 'import json, sys; r = json.loads(sys.stdin.read()); r.update(rep=int(sys.argv[1]), side=sys.argv[3], load_before=float(sys.argv[2])); print(json.dumps(r))' \
    "$rep" "$load" "$impl" < "$DIR/rank0.out" >> "$RESULTS"
  echo "rep $rep $impl $net: $(grep -o '"overhead_ms": *[0-9.-]*' "$DIR/rank0.out")" >&2
}

for rep in $(seq "$REPS"); do
  order="facekit pytorch pytorch-fk"
  [ $((rep % 2)) -eq 0 ] && order="pytorch-fk pytorch facekit"
  for net in $NETS; do
    batch=$([ "$net" = tiny ] && echo "${TINY_BATCH:-8}" || echo "${R50_BATCH:-2}")
    for impl in $order; do
      run_pair "$rep" "$impl" "$net" "$batch"
    done
  done
done

"$PY" - "$RESULTS" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
by = {(r["rep"], r["side"], r["net"]): r for r in rows}
nets = list(dict.fromkeys(r["net"] for r in rows))
reps = sorted({r["rep"] for r in rows})
for net in nets:
    sizes = {by[(rep, i, net)]["params"] for rep in reps for i in ("facekit", "pytorch", "pytorch-fk")}
    if len(sizes) != 1:
        sys.exit(f"{net}: parameter counts differ between the sides: {sizes}")
print("| network | gradient MB | rep | facekit ms/step without / with DDP | facekit overhead ms | PyTorch DDP without / with | PyTorch overhead ms | overhead facekit / PyTorch | PyTorch with facekit's buckets: overhead ms | load before (fk, pt, pt-fk) |")
print("|---|---|---|---|---|---|---|---|---|---|")
summary = {}
for net in nets:
    for rep in reps:
        f, p, q = (by[(rep, i, net)] for i in ("facekit", "pytorch", "pytorch-fk"))
        ratio = f["overhead_ms"] / p["overhead_ms"] if p["overhead_ms"] > 0 else float("nan")
        summary.setdefault(net, []).append((ratio, f, p, q))
        print(f"| {net} | {f['grad_mb']:.1f} | {rep} | {f['ms_local']:.1f} / {f['ms_ddp']:.1f} | {f['overhead_ms']:.1f} "
              f"| {p['ms_local']:.1f} / {p['ms_ddp']:.1f} | {p['overhead_ms']:.1f} | {ratio:.2f} | {q['overhead_ms']:.1f} "
              f"| {f['load_before']}, {p['load_before']}, {q['load_before']} |")
print()
print("| network | median over reps: facekit overhead ms | PyTorch overhead ms | PyTorch with facekit's buckets | median of per-rep ratios facekit / PyTorch |")
print("|---|---|---|---|---|")
for net, v in summary.items():
    med = lambda k, i: statistics.median(x[i][k] for x in v)
    print(f"| {net} | {med('overhead_ms', 1):.1f} | {med('overhead_ms', 2):.1f} | {med('overhead_ms', 3):.1f} | {statistics.median(x[0] for x in v):.2f} |")
print()
print(f"results: {sys.argv[1]}")
for net in nets:
    q = by[(reps[0], "pytorch-fk", net)]
    p = by[(reps[0], "pytorch", net)]
    print(f"{net}: DDP's rebuilt buckets (bytes) {p['rebuilt_bucket_sizes']}; with facekit's caps {q['bucket_cap_mb_list']} MiB: {q['rebuilt_bucket_sizes']}")
PY
