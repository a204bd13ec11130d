#!/usr/bin/env bash
# Do two facekit binaries make the same datasets? Runs `pack` of a folder of photos with a
# validation split, `export rec` of that dataset (with OLD, so both imports read the same .rec)
# and `import rec` of it with each binary, into the same paths, then compares every file
# byte for byte. Reports (`*.report.json`) and manifests hold times (`elapsed_s`, `images_per_s`,
# `records_per_s`, `created_unix`): those are compared with these fields removed, and every
# difference in them is printed. Lock files (`*.lock`) hold the last writer's PID: neither listed nor compared.
#
#   scripts/compare-pack-outputs.sh OLD_FACEKIT NEW_FACEKIT [PHOTOS (default raw_images)] [MODELS]
#
# Exit 0 when every file is identical (up to those times), 1 otherwise.
set -euo pipefail
old=$(realpath "$1") new=$(realpath "$2") photos=$(realpath "${3:-raw_images}")
export FACEKIT_MODELS=${4:-${FACEKIT_MODELS:-models}}
work=$(mktemp -d /tmp/facekit-compare.XXXXXX)
trap 'rm -rf "$work"' EXIT

run_side() { # BIN SIDE
    local bin=$1 side=$2 t0
    t0=$(date +%s)
    "$bin" pack "$photos" --valid-fraction 0.15 -o "$work/out/pack/raw" --quiet
    [ -d "$work/rec" ] || "$old" export rec "$work/out/pack/raw" -o "$work/rec" >/dev/null
    "$bin" import rec "$work/rec" -o "$work/out/import/rec" --quiet
    mv "$work/out" "$work/$side"
    echo "$side: $(( $(date +%s) - t0 )) s"
}
run_side "$old" old
run_side "$new" new

status=0
normalise() {
    python3 -c 'import json,sys
v = json.load(open(sys.argv[1]))
for k in ("elapsed_s", "images_per_s", "records_per_s", "created_unix"):
    v.pop(k, None)
print(json.dumps(v, sort_keys=True, indent=1))' "$1"
}
# Lock files are left out of the lists too: which names a run locks (an import locks NAME.valid
# since it can write one) is no output.
a=$(cd "$work/old" && find . -type f ! -name '*.lock' | sort) b=$(cd "$work/new" && find . -type f ! -name '*.lock' | sort)
if [ "$a" != "$b" ]; then
    echo "the file lists differ:"; diff <(echo "$a") <(echo "$b") || true; status=1
fi
for f in $a; do
    [ -f "$work/new/$f" ] || continue
    if cmp -s "$work/old/$f" "$work/new/$f"; then
        echo "identical      $f"
    elif [[ $f == *.json ]] && diff <(normalise "$work/old/$f") <(normalise "$work/new/$f") >/dev/null; then
        echo "same but times $f: $(diff <(python3 -m json.tool "$work/old/$f") <(python3 -m json.tool "$work/new/$f") | grep '^[<>]' | tr -s ' ' | paste -sd' ')"
    else
        echo "DIFFERENT      $f"; status=1
    fi
done
exit $status
