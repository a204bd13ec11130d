#!/usr/bin/env python3
"""PyTorch reference for scripts/bench-gpu.sh: one training run of the network `facekit train`
trains, on synthetic input already on the device (the step alone, no data path).

The networks, ArcFace head (s=64, m=0.5), SGD (momentum 0.9, weight decay 5e-4, PyTorch's default
foreach kernels) and loss are scripts/bench_train_reference.py's (scripts/bench_nets.py); this
adds facekit's `tiny` (the ResNet with blocks [1, 1, 1, 1] and base width 16, for the CPU smoke
run), the data wait
(zero by construction) and CUDA's sync debug mode over the timed steps (--sync-debug error: the
same check bench-gpu.sh runs facekit under). Prints one JSON line.
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
    ap.add_argument("--arch", choices=["resnet50", "iresnet50", "tiny"], required=True)
    ap.add_argument("--image-size", type=int, required=True)
    ap.add_argument("--batch-size", type=int, required=True)
    ap.add_argument("--classes", type=int, required=True)
    ap.add_argument("--precision", choices=["fp32", "fp16", "bf16"], required=True)
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--sync-debug", choices=["off", "error"], default="off")
    a = ap.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.backends.cudnn.benchmark = True
    step = sgd_step(network(a.arch, a.image_size), a, dev)
    cuda = dev.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for _ in range(a.warmup):
        step()
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    synchronised = None
    t0 = time.perf_counter()
    if cuda and a.sync_debug == "error":
        torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(a.steps):
            loss = step()
    except RuntimeError as e:
        synchronised = str(e).splitlines()[0]
    finally:
        if cuda:
            torch.cuda.set_sync_debug_mode("default")
    sync()
    dt = time.perf_counter() - t0
    print(json.dumps({
        "runner": "pytorch", "arch": a.arch, "image_size": a.image_size, "batch_size": a.batch_size,
        "precision": a.precision, "channels_last": a.channels_last, "steps": a.steps,
        "device": torch.cuda.get_device_name(dev) if cuda else "cpu",
        "images_per_s": round(a.batch_size * a.steps / dt, 1), "data_wait_ms": 0.0,
        "torch_peak_allocated_gib": round(torch.cuda.max_memory_allocated(dev) / 2**30, 2) if cuda else None,
        "sync_debug": a.sync_debug if cuda else "unavailable (CPU)", "synchronised": synchronised,
        "final_loss": float(loss.detach()) if synchronised is None else None,
    }))


if __name__ == "__main__":
    main()
