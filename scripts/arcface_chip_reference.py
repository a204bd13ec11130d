#!/usr/bin/env python3
"""Reference ArcFace chips from insightface's recipe, for checking facekit's `--align arcface`.

insightface's `norm_crop` (python-package/insightface/utils/face_align.py) as it stands today:
`estimate_norm` scales `arcface_dst` to the chip (size % 112 == 0: ratio size/112; else, size %
128 == 0: ratio size/128 and 8 * ratio added to x), fits scikit-image's
`SimilarityTransform.estimate(lmk, dst)` (Umeyama's least squares), and the chip is
`cv2.warpAffine(img, M, (size, size), borderValue=0.0)` (bilinear). Older insightface releases fit
with `cv2.estimateAffinePartial2D(..., method=cv2.LMEDS)`; with `--fit lmeds` this script does that
instead (a robust fit: on real, imperfect landmarks it is not the least-squares transform).

Input: a JSON file, a list of {"image": PNG path, "points": [[x, y] x 5] in insightface order,
"size": N}. Writes `<out>/<index>.png` (the chip, same channel order as the input) and
`<out>/reference.json` (the 2x3 matrix of each).

Usage: arcface_chip_reference.py --out DIR [--fit umeyama|lmeds] ITEMS.json
"""
import argparse
import json
import os
import warnings

import cv2
import numpy as np
from skimage import transform as trans

ARCFACE_DST = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)


def estimate_norm(lmk, image_size, fit):
    # insightface's estimate_norm, line for line (its dst is float32, so is this one).
    assert lmk.shape == (5, 2)
    assert image_size % 112 == 0 or image_size % 128 == 0
    if image_size % 112 == 0:
        ratio = float(image_size) / 112.0
        diff_x = 0
    else:
        ratio = float(image_size) / 128.0
        diff_x = 8.0 * ratio
    dst = ARCFACE_DST * ratio
    dst[:, 0] += diff_x
    if fit == "lmeds":
        m, _ = cv2.estimateAffinePartial2D(lmk, dst, method=cv2.LMEDS)
        return m
    tform = trans.SimilarityTransform()
    with warnings.catch_warnings():
        # scikit-image 0.26 prefers SimilarityTransform.from_estimate; insightface calls estimate.
        warnings.simplefilter("ignore")
        tform.estimate(lmk, dst)
    return tform.params[0:2, :]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--out", required=True)
    ap.add_argument("--fit", choices=["umeyama", "lmeds"], default="umeyama")
    ap.add_argument("items")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    with open(a.items) as f:
        items = json.load(f)
    out = []
    for i, it in enumerate(items):
        img = cv2.imread(it["image"], cv2.IMREAD_COLOR)
        lmk = np.array(it["points"], dtype=np.float32)
        m = estimate_norm(lmk, it["size"], a.fit)
        chip = cv2.warpAffine(img, m, (it["size"], it["size"]), borderValue=0.0)
        path = os.path.join(a.out, f"{i}.png")
        cv2.imwrite(path, chip)
        out.append({"chip": path, "matrix": np.asarray(m).tolist()})
    with open(os.path.join(a.out, "reference.json"), "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
