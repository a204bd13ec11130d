#!/usr/bin/env bash
# Peak memory of `facekit pack` as the input grows: the same photos linked K times under new
# identity names (K = 1, 4, 16 by default), with one unreadable file per identity so that the
# rejects list grows too. Memory should stay flat: chunks in flight are bounded, rejected files go
# straight to disk. Prints a Markdown table of files, rejects, seconds and peak RSS.
#
# Usage: scripts/bench-pack-memory.sh [ROOT] [K...]   (default ../shared/data/lfw100 1 4 16)
# Needs: `source .facekit.env` (FACEKIT_MODELS) and /usr/bin/time. Builds facekit with --release.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(realpath "${1:-../shared/data/lfw100}")"
shift || true
COPIES=("${@:-1 4 16}")
read -r -a COPIES <<< "${COPIES[*]}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
FK="${FACEKIT_BIN:-}"
if [ -z "$FK" ]; then cargo build --release --quiet --bin facekit; FK=${CARGO_TARGET_DIR:-target}/release/facekit; fi

echo "input: $ROOT linked K times; $(date -u +%F) on $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo
echo "| K | files | rejected | seconds | peak RSS (MiB) |"
echo "|---|---|---|---|---|"
for k in "${COPIES[@]}"; do
  in="$WORK/in$k"
  for person in "$ROOT"/*/; do
    name="$(basename "$person")"
    for ((c = 0; c < k; c++)); do
      d="$in/${name}_$c"
      mkdir -p "$d"
      ln -s "$person"* "$d/"
      printf 'not a photo' > "$d/zz_unreadable.jpg"
    done
  done
  files=$(find -L "$in" -type f | wc -l)
  /usr/bin/time -f "%e %M" -o "$WORK/time" "$FK" pack "$in" -o "$WORK/out$k/set" --quiet > /dev/null
  read -r secs kib < "$WORK/time"
  rejected=$(($(wc -l < "$WORK/out$k/set.rejects.tsv") - 1))
  echo "| $k | $files | $rejected | $secs | $((kib / 1024)) |"
  rm -rf "$in" "$WORK/out$k"
done
