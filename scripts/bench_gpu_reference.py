#!/usr/bin/env python3
"""PyTorch reference for scripts/bench-gpu.sh: one training run of the network `facekit train`
trains, on synthetic input already on the device (the step alone, no data path).

The networks, ArcFace head (s=64, m=0.5), SGD (momentum 0.9, weight decay 5e-4, PyTorch's default
foreach kernels) and loss are scripts/bench_train_reference.py's; this adds facekit's `tiny`
(the ResNet code with blocks [1, 1, 1, 1] and base width 16, for the CPU smoke run), the data wait
(zero by construction) and CUDA's sync debug mode over the timed steps (--sync-debug error: the
same check bench-gpu.sh runs facekit under). Prints one JSON line.
"""
import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_train_reference import ArcFace, Bottleneck, FaceResNet50  # noqa: E402
from iresnet_ref import IResNet  # noqa: E402  (bench_train_reference put its folder on the path)


class FaceResNet(nn.Module):
    """facekit's ResNet family for any blocks and base width (FaceResNet50 is [3, 4, 6, 3], 64)."""

    def __init__(self, image_size, blocks, base, emb=512):
        super().__init__()
        self.conv1 = nn.Conv2d(3, base, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(base)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        layers, inplanes = [], base
        for i, (n, stride) in enumerate(zip(blocks, [1, 2, 2, 2])):
            planes = base << i
            down = None
            if stride != 1 or inplanes != planes * 4:
                down = nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False), nn.BatchNorm2d(planes * 4))
            blk = [Bottleneck(inplanes, planes, stride, down)]
            inplanes = planes * 4
            blk += [Bottleneck(inplanes, planes) for _ in range(n - 1)]
            layers.append(nn.Sequential(*blk))
        self.layers = nn.Sequential(*layers)
        side = math.ceil(image_size / 32)
        self.head_bn = nn.BatchNorm2d(inplanes)
        self.fc = nn.Linear(inplanes * side * side, emb)
        self.features = nn.BatchNorm1d(emb)

    def forward(self, x):
        x = self.layers(self.maxpool(F.relu(self.bn1(self.conv1(x)))))
        return self.features(self.fc(self.head_bn(x).flatten(1)))


def network(arch, size):
    if arch == "resnet50":
        return FaceResNet50(size)
    if arch == "tiny":
        return FaceResNet(size, [1, 1, 1, 1], 16)
    return IResNet("r50", size)


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
    fmt = torch.channels_last if a.channels_last else torch.contiguous_format
    model = network(a.arch, a.image_size).to(dev).to(memory_format=fmt)
    head = ArcFace(512, a.classes).to(dev)
    params = [p for p in list(model.parameters()) + list(head.parameters()) if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4)
    scaler = torch.amp.GradScaler(dev.type, enabled=a.precision == "fp16")
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[a.precision]
    x = torch.randn(a.batch_size, 3, a.image_size, a.image_size, device=dev).contiguous(memory_format=fmt)
    y = torch.randint(0, a.classes, (a.batch_size,), device=dev)

    def step():
        with torch.autocast(dev.type, dtype=dtype, enabled=a.precision != "fp32"):
            emb = model(x)
        loss = head(emb, y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return loss

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
