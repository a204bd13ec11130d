#!/usr/bin/env python3
"""Five face landmarks from a second detector, MTCNN (facenet-pytorch, weights shipped in its wheel).

For each image: MTCNN on the CPU, every face it finds with its five landmarks in insightface's
order (left eye centre, right eye centre, nose tip, left mouth corner, right mouth corner, as seen in
the image), in pixels of the image. Writes one JSON list to stdout: per image a list of
{"box": [x1, y1, x2, y2], "points": [[x, y] x 5], "prob": p} (empty when MTCNN finds no face; p
is MTCNN's face probability, the "faceness score" of an IJB landmarks file).

Usage: mtcnn_landmarks_reference.py IMAGE...
"""
import json
import sys

import torch
from facenet_pytorch import MTCNN
from PIL import Image


def main():
    torch.set_num_threads(1)
    mtcnn = MTCNN(device="cpu", select_largest=True, keep_all=True)
    out = []
    for path in sys.argv[1:]:
        img = Image.open(path).convert("RGB")
        boxes, probs, points = mtcnn.detect(img, landmarks=True)
        if boxes is None:
            out.append([])
            continue
        out.append([{"box": b.tolist(), "points": p.tolist(), "prob": float(q)} for b, p, q in zip(boxes, points, probs)])
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
