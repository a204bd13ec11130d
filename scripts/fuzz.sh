#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser of untrusted input (docs/RELIABILITY.md, "Fuzzing").
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]    default: 300 s for each of the targets in fuzz/Cargo.toml
#
# Needs the nightly toolchain (present on the dev machines) and cargo-fuzz (installed here when
# missing). Each target starts from fuzz/seeds/TARGET (committed) plus its growing working corpus
# fuzz/corpus/TARGET (not committed). An input that crashes, hangs (over 10 s) or allocates more
# than 4 GiB lands in fuzz/artifacts/TARGET/; copy it to tests/fuzz_regressions/TARGET/, where
# tests/cli/fuzz_corpus.rs replays it on the stable toolchain with every `cargo test`, then fix it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
source .facekit.env
SECONDS_EACH=${1:-300}
shift || true
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
  mapfile -t TARGETS < <(sed -n 's/^name = "\([a-z_]*\)"$/\1/p' fuzz/Cargo.toml | grep -v facekit-fuzz)
fi
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
if [ ! -d fuzz/seeds ]; then
  cargo build --no-default-features --bin facekit
  .venv/bin/python scripts/fuzz_seeds.py "${CARGO_TARGET_DIR:-target}/debug/facekit"
fi
status=0
for t in "${TARGETS[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  echo "== fuzz $t for $SECONDS_EACH s"
  if ! cargo +nightly fuzz run --fuzz-dir fuzz "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
      -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=4096 -max_len=1048576 -print_final_stats=1 2>&1 \
      | grep -E "^(#[0-9]+ *DONE|stat::number_of_executed_units|stat::peak_rss_mb|==[0-9]+== ERROR|SUMMARY|artifact_prefix|Test unit written)"; then
    status=1
  fi
  if ls "fuzz/artifacts/$t"/* >/dev/null 2>&1; then
    echo "!! $t: inputs that fail are in fuzz/artifacts/$t/"
    status=1
  fi
done
exit $status
