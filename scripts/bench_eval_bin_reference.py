#!/usr/bin/env python3
"""PyTorch reference for `facekit train --eval-bin` speed (scripts/bench-eval-bin.sh runs it).

Scores a verification .bin the way insightface's recognition/arcface_torch/eval/verification.py
does during training (`load_bin` once, then `test` at every callback): every image decoded and
resized once into two float32 NCHW tensors (the image and its mirror), then for each of them
batches of --batch-size (10 in arcface_torch's CallBackVerification) normalised as
((x / 255) - 0.5) / 0.5 and run through the network in eval mode under no_grad, embeddings copied
to numpy; the two embeddings summed, L2-normalised (sklearn), and insightface's 10-fold accuracy
over thresholds 0..4 by 0.01 (calculate_roc, re-implemented in scripts/eval_reference.py).
arcface_torch also runs calculate_val (TAR at FAR 1e-3), which facekit does not: left out.

The network is the PyTorch twin of facekit's `--arch tiny` (torchvision-layout ResNet with
bottleneck blocks [1, 1, 1, 1], base width 16, then the embedding head BN2d, dropout, flatten,
FC 512, BN1d), randomly initialised: the cost of a forward pass does not depend on the weights.
Prints one JSON line with the decode, embed and fold times.
"""
import argparse
import io
import json
import os
import pickle
import sys
import time

import numpy as np
import torch
from PIL import Image
from sklearn.preprocessing import normalize

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_nets import NETS, FaceResNet  # noqa: E402
from eval_reference import kfold  # noqa: E402


def load_bin(path, image_size):
    """arcface_torch's load_bin with PIL for mx.image.imdecode: two float32 [N, 3, H, W] tensors."""
    with open(path, "rb") as f:
        bins, issame_list = pickle.load(f, encoding="bytes")
    data_list = [torch.empty((len(issame_list) * 2, 3, image_size, image_size)) for _ in (0, 1)]
    for idx in range(len(issame_list) * 2):
        img = Image.open(io.BytesIO(bins[idx])).convert("RGB")
        if img.size != (image_size, image_size):
            img = img.resize((image_size, image_size), Image.BILINEAR)
        img = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)
        for flip in (0, 1):
            data_list[flip][idx][:] = torch.flip(img, dims=[2]) if flip else img
    return data_list, np.array(issame_list, dtype=bool)


@torch.no_grad()
def embed(backbone, data_list, batch_size):
    """arcface_torch's test(): batches of batch_size, the last one taken from the end."""
    embeddings_list = []
    for data in data_list:
        embeddings = None
        ba = 0
        while ba < data.shape[0]:
            bb = min(ba + batch_size, data.shape[0])
            count = bb - ba
            _data = data[bb - batch_size: bb]
            img = ((_data / 255) - 0.5) / 0.5
            _embeddings = backbone(img).detach().cpu().numpy()
            if embeddings is None:
                embeddings = np.zeros((data.shape[0], _embeddings.shape[1]))
            embeddings[ba:bb, :] = _embeddings[(batch_size - count):, :]
            ba = bb
        embeddings_list.append(embeddings)
    return normalize(embeddings_list[0] + embeddings_list[1])


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("bin")
    ap.add_argument("--image-size", type=int, default=112)
    ap.add_argument("--batch-size", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=2, help="evaluations after loading; the fastest is reported")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    # Its shortcuts made after their blocks' convolutions: the seed-0 weights this script always had.
    backbone = FaceResNet(a.image_size, *NETS["tiny"], shortcut_last=True).eval()
    t0 = time.perf_counter()
    data_list, issame = load_bin(a.bin, a.image_size)
    load_s = time.perf_counter() - t0
    best = None
    for _ in range(a.repeat):
        t0 = time.perf_counter()
        emb = embed(backbone, data_list, a.batch_size)
        t1 = time.perf_counter()
        acc = kfold(emb, issame, 10)["accuracy_mean"]
        t2 = time.perf_counter()
        run = (t2 - t0, t1 - t0, t2 - t1)
        best = run if best is None or run[0] < best[0] else best
    print(json.dumps({
        "runner": "pytorch-eager (arcface_torch verification.py)", "torch": torch.__version__, "threads": a.threads,
        "batch_size": a.batch_size, "pairs": int(len(issame)), "load_s": round(load_s, 2),
        "eval_s": round(best[0], 2), "embed_s": round(best[1], 2), "folds_s": round(best[2], 2), "accuracy": acc,
    }))


if __name__ == "__main__":
    main()
