#!/usr/bin/env python3
"""Reference face chips from Python dlib, for checking facekit's alignment against dlib.

For each input image: run dlib's HOG face detector at 1x, and only if nothing is found at
2x upsampling (``detector(img, 1)``); take the largest box; predict the 5 landmarks with
``shape_predictor_5_face_landmarks.dat``; cut ``dlib.get_face_chip(img, shape, size, padding)``.
Writes ``<out>/<index>.png`` (the chip) and ``<out>/reference.json``: one entry per image with
the landmarks, the face box, the face count and whether upsampling was needed.

Feed it lossless images (PNG) when comparing with another decoder: JPEG decoders differ by a
grey level or two, which would blur what is being measured.

Usage: dlib_chip_reference.py --models DIR --out DIR [--size 224] [--padding 0.25] IMAGE...
"""
import argparse
import json
import os
import sys

import dlib
import numpy as np


def load_rgb(path):
    # dlib.load_rgb_image reads PNG/JPEG itself, so no imaging library is needed.
    return dlib.load_rgb_image(path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--models", required=True, help="folder with shape_predictor_5_face_landmarks.dat")
    ap.add_argument("--out", required=True, help="output folder (created)")
    ap.add_argument("--size", type=int, default=224, help="chip side in pixels")
    ap.add_argument("--padding", type=float, default=0.25, help="dlib padding")
    ap.add_argument("images", nargs="+", help="input images")
    a = ap.parse_args()

    os.makedirs(a.out, exist_ok=True)
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(os.path.join(a.models, "shape_predictor_5_face_landmarks.dat"))
    results = []
    for i, path in enumerate(a.images):
        img = load_rgb(path)
        upsampled = False
        dets = list(detector(img, 0))
        if not dets:
            dets = list(detector(img, 1))
            upsampled = True
        entry = {"image": path, "faces": len(dets), "upsampled": upsampled, "height": int(img.shape[0]),
                 "width": int(img.shape[1])}
        if dets:
            # Ties keep the first box, like facekit.
            best = max(dets, key=lambda r: (r.right() - r.left() + 1) * (r.bottom() - r.top() + 1))
            shape = predictor(img, best)
            chip = dlib.get_face_chip(img, shape, size=a.size, padding=a.padding)
            chip_path = os.path.join(a.out, f"{i}.png")
            dlib.save_image(np.ascontiguousarray(chip), chip_path)
            entry.update({
                "box": [best.left(), best.top(), best.right(), best.bottom()],
                "landmarks": [[shape.part(k).x, shape.part(k).y] for k in range(shape.num_parts)],
                "chip": chip_path,
            })
        results.append(entry)
    with open(os.path.join(a.out, "reference.json"), "w") as f:
        json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
