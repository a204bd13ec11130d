#!/usr/bin/env bash
# An IJB-C-format set for benchmarks (scripts/bench-ijb.sh on the CPU, scripts/bench-gpu.sh on a
# GPU): DISTINCT LFW photos (the first of each lfw100 person) with MTCNN's five points and faceness
# score (.venv-mtcnn), listed FACES times over in insightface's layout (loose_crop/, meta/): four
# faces a template, two a media, one 1:1 pair per template. Speed does not depend on which faces.
#
# usage: scripts/make-ijb-set.sh ROOT FACES DISTINCT   (env: FACEKIT_SHARED_DATA)
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 3 ] || { echo "usage: scripts/make-ijb-set.sh ROOT FACES DISTINCT" >&2; exit 2; }
.venv-mtcnn/bin/python - "$1" "$2" "$3" "${FACEKIT_SHARED_DATA:-../shared/data}/lfw100" <<'PY'
import json, os, shutil, subprocess, sys
root, faces, distinct, lfw = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
os.makedirs(os.path.join(root, "loose_crop"), exist_ok=True)
os.makedirs(os.path.join(root, "meta"), exist_ok=True)
people = sorted(os.listdir(lfw))
photos = [os.path.join(lfw, p, sorted(os.listdir(os.path.join(lfw, p)))[0]) for p in people][:distinct]
names = [os.path.basename(p) for p in photos]
for p, n in zip(photos, names):
    shutil.copy(p, os.path.join(root, "loose_crop", n))
found = json.loads(subprocess.run([sys.executable, "scripts/mtcnn_landmarks_reference.py"] + photos,
                                  check=True, capture_output=True).stdout)
lines = []
for n, dets in zip(names, found):
    d = min(dets, key=lambda d: abs((d["box"][0] + d["box"][2]) / 2 - 125) + abs((d["box"][1] + d["box"][3]) / 2 - 125))
    lines.append("%s %s %s" % (n, " ".join("%r %r" % tuple(p) for p in d["points"]), d["prob"]))
with open(os.path.join(root, "meta", "ijbc_name_5pts_score.txt"), "w") as f, \
     open(os.path.join(root, "meta", "ijbc_face_tid_mid.txt"), "w") as g:
    for i in range(faces):
        f.write(lines[i % len(lines)] + "\n")
        g.write("%s %d %d\n" % (names[i % len(names)], i // 4, i // 2))
templates = (faces + 3) // 4
with open(os.path.join(root, "meta", "ijbc_template_pair_label.txt"), "w") as f:
    for t in range(templates):
        f.write("%d %d %d\n" % (t, (t + 1) % templates, t % 2))
PY
