#!/usr/bin/env python3
"""PyTorch reference for `facekit train` speed (scripts/bench-backbones.sh runs it on the CPU).

The same network, head, loss, optimiser, batch, precision and memory layout as facekit: ResNet-50 V1
(torchvision layout, with the embedding head BN2d -> dropout -> flatten -> FC 512 -> BN1d) or
IR-ResNet50 (the PyTorch IR-ResNet the tests check facekit's against,
train/tests/python/iresnet_ref.py, which has that head built in), ArcFace (s=64,
m=0.5) over --classes classes, SGD momentum 0.9, weight decay 5e-4 (PyTorch's default foreach
kernels), fp16 autocast with a GradScaler or bf16 autocast, optional channels_last. Input is
synthetic and already on the device, so this measures the training step alone.
Prints one JSON line: images/s, peak GPU memory, device name.
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_nets import network, sgd_step  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--arch", choices=["resnet50", "iresnet50"], default="resnet50")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: PyTorch's default)")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--classes", type=int, default=10000)
    ap.add_argument("--precision", choices=["fp32", "fp16", "bf16"], default="fp16")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=15)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args()
    dev = torch.device(a.device)
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.backends.cudnn.benchmark = True
    step = sgd_step(network(a.arch, a.image_size), a, dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    for _ in range(a.warmup):
        step()
    sync()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        loss = step()
    sync()
    dt = time.perf_counter() - t0
    print(json.dumps({
        "runner": "pytorch-eager", "arch": a.arch,
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "image_size": a.image_size, "batch_size": a.batch_size, "precision": a.precision,
        "channels_last": a.channels_last, "steps": a.steps,
        "images_per_s": round(a.batch_size * a.steps / dt, 1),
        "peak_gpu_mem_gib": round(torch.cuda.max_memory_allocated(dev) / 2**30, 2) if dev.type == "cuda" else None,
        "final_loss": float(loss.detach()),
    }))


if __name__ == "__main__":
    main()
