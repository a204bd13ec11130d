#!/usr/bin/env python3
"""The original packing approach, as a reference for `facekit pack` (benchmark and test helper).

Single process, exactly what a dlib Python user writes: Pillow decode, dlib HOG detector at 1x
(and 2x upsampled when nothing is found, as facekit does), largest face, 5-point shape predictor,
`dlib.get_face_chip(img, shape, size, padding)`, Pillow JPEG encode at quality 95 (into memory:
facekit's cost of writing shards is comparable and small).

Usage:
  pack_reference.py ROOT [--limit N] [--size 224] [--padding 0.25] [--models DIR]
                    [--landmarks-out FILE]

ROOT is a folder of identity folders. Prints one JSON line: images, packed, no_face, seconds,
images_per_s. `--landmarks-out` writes, for every face found, a facekit `--landmarks` line
`rel/path x1 y1 ... x5 y5` in insightface order (eye centres, nose tip, mouth corners). dlib's
5-point model has no mouth points, so the nose tip and mouth corners are ESTIMATED from the eyes
and the nose base with the proportions of the ArcFace template: good enough to exercise and time
the landmarks path, not a substitute for a real 5-point detector when training.
"""
import argparse
import io
import json
import os
import sys
import time

import dlib
import numpy as np
from PIL import Image


def files_under(root):
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort()
        for f in sorted(filenames):
            out.append(os.path.join(dirpath, f))
    return sorted(out, key=lambda p: os.path.relpath(p, root).split(os.sep))


def insightface_points(shape):
    """Approximate insightface 5 points from dlib's 5 (see the module doc)."""
    p = np.array([[shape.part(i).x, shape.part(i).y] for i in range(5)], dtype=np.float64)
    eye_l = (p[2] + p[3]) / 2.0  # eye on the image's left
    eye_r = (p[0] + p[1]) / 2.0
    mid = (eye_l + eye_r) / 2.0
    down = p[4] - mid  # eye midpoint to nose base
    # ArcFace template: nose tip ~0.8, mouth line ~1.62 of the eye-to-nose-base drop; mouth
    # corners ~0.83 of the eye distance apart.
    nose = mid + 0.8 * down
    mouth = mid + 1.62 * down
    across = (eye_r - eye_l) * 0.415
    return [eye_l, eye_r, nose, mouth - across, mouth + across]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("root")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--padding", type=float, default=0.25)
    ap.add_argument("--models", default=os.environ.get("FACEKIT_MODELS", "models"))
    ap.add_argument("--landmarks-out")
    args = ap.parse_args()

    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(os.path.join(args.models, "shape_predictor_5_face_landmarks.dat"))
    paths = files_under(args.root)
    if args.limit:
        paths = paths[: args.limit]
    lines = []
    packed = no_face = 0
    start = time.perf_counter()
    for path in paths:
        img = np.asarray(Image.open(path).convert("RGB"))
        faces = detector(img, 0)
        if len(faces) == 0:
            faces = detector(img, 1)
        if len(faces) == 0:
            no_face += 1
            continue
        face = max(faces, key=lambda r: r.width() * r.height())
        shape = predictor(img, face)
        chip = dlib.get_face_chip(img, shape, size=args.size, padding=args.padding)
        buf = io.BytesIO()
        Image.fromarray(chip).save(buf, format="JPEG", quality=95)
        packed += 1
        if args.landmarks_out:
            rel = os.path.relpath(path, args.root).replace(os.sep, "/")
            pts = " ".join(f"{x:.2f} {y:.2f}" for x, y in insightface_points(shape))
            lines.append(f"{rel} {pts}\n")
    seconds = time.perf_counter() - start
    if args.landmarks_out:
        with open(args.landmarks_out + ".tmp", "w") as f:
            f.writelines(lines)
        os.replace(args.landmarks_out + ".tmp", args.landmarks_out)
    print(json.dumps({
        "images": len(paths), "packed": packed, "no_face": no_face,
        "seconds": round(seconds, 3), "images_per_s": round(len(paths) / seconds, 2) if seconds else 0,
    }))


if __name__ == "__main__":
    sys.exit(main())
