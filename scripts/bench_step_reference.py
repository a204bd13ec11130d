#!/usr/bin/env python3
"""PyTorch eager reference for scripts/bench-step.sh: facekit's tiny network (`--arch tiny`: the
torchvision ResNet layout with bottlenecks [1, 1, 1, 1] at base width 16, embedding head
BN2d -> dropout -> flatten -> FC 512 -> BN1d), ArcFace (s=64, m=0.5) over --classes classes, SGD
momentum 0.9, weight decay 5e-4 with foreach kernels, fp32 on the CPU. Input is synthetic, made
once, so this is the training step alone. Prints one JSON line with milliseconds per step.
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_nets import NETS, ArcFace, FaceResNet  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--image-size", type=int, default=112)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=10)
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model, head = FaceResNet(a.image_size, *NETS["tiny"]), ArcFace(512, a.classes)
    opt = torch.optim.SGD(list(model.parameters()) + list(head.parameters()), lr=0.1, momentum=0.9, weight_decay=5e-4, foreach=True)
    x = torch.randn(a.batch_size, 3, a.image_size, a.image_size)
    y = torch.randint(0, a.classes, (a.batch_size,))

    def step():
        loss = head(model(x), y)
        opt.zero_grad(set_to_none=False)
        loss.backward()
        opt.step()
        return loss

    for _ in range(a.warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        loss = step()
    ms = 1000 * (time.perf_counter() - t0) / a.steps
    print(json.dumps({"runner": "pytorch-eager", "ms_per_step": round(ms, 1), "final_loss": float(loss.detach())}))


if __name__ == "__main__":
    main()
