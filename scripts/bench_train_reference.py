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
import math
import time

import os
import sys

import torch
import torch.nn as nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "train", "tests", "python"))
from iresnet_ref import IResNet  # noqa: E402
import torch.nn.functional as F


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = downsample

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + idt)


class FaceResNet50(nn.Module):
    def __init__(self, image_size, emb=512, dropout=0.0):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        layers, inplanes = [], 64
        for planes, blocks, stride in [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)]:
            down = None
            if stride != 1 or inplanes != planes * 4:
                down = nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False), nn.BatchNorm2d(planes * 4))
            blk = [Bottleneck(inplanes, planes, stride, down)]
            inplanes = planes * 4
            blk += [Bottleneck(inplanes, planes) for _ in range(blocks - 1)]
            layers.append(nn.Sequential(*blk))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        side = math.ceil(image_size / 32)
        self.head_bn = nn.BatchNorm2d(2048)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(2048 * side * side, emb)
        self.features = nn.BatchNorm1d(emb)

    def forward(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(self.head_bn(x)).flatten(1)
        return self.features(self.fc(x))


class ArcFace(nn.Module):
    def __init__(self, emb, classes, s=64.0, m=0.5):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(classes, emb) * 0.01)
        self.s, self.m = s, m
        self.cos_m, self.sin_m = math.cos(m), math.sin(m)
        self.th, self.mm = math.cos(math.pi - m), math.sin(math.pi - m) * m

    def forward(self, emb, labels):
        cos = F.linear(F.normalize(emb.float()), F.normalize(self.weight.float())).clamp(-1, 1)
        tgt = cos.gather(1, labels[:, None])
        sin = (1.0 - tgt * tgt).clamp_min(0).sqrt()
        phi = tgt * self.cos_m - sin * self.sin_m
        phi = torch.where(tgt > self.th, phi, tgt - self.mm)
        logits = cos.scatter(1, labels[:, None], phi) * self.s
        return F.cross_entropy(logits, labels)


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
    model = FaceResNet50(a.image_size) if a.arch == "resnet50" else IResNet("r50", a.image_size)
    model, head = model.to(dev), ArcFace(512, a.classes).to(dev)
    fmt = torch.channels_last if a.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
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
