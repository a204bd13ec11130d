"""What the PyTorch references of facekit's benchmarks share (scripts/bench_*_reference.py): the
twins of facekit's networks and of its ArcFace head, and the SGD training step they time.

- FaceResNet: facekit's ResNet V1 (torchvision layout, bottleneck blocks) with its embedding head
  BN2d -> dropout -> flatten -> FC 512 -> BN1d, for any blocks per stage and stem width:
  `resnet50` is blocks [3, 4, 6, 3] at width 64, facekit's `tiny` [1, 1, 1, 1] at width 16;
- IResNet: the IR-ResNet the tests check facekit's against (train/tests/python/iresnet_ref.py);
- ArcFace: the additive angular margin head (s=64, m=0.5 by default);
- sgd_step: SGD (momentum 0.9, weight decay 5e-4, PyTorch's default foreach kernels) under
  autocast at the given precision, fp16 with a GradScaler.

A network's random weights depend on the order in which its layers are made: every builder here
makes them in the order of the script it replaced, so that seeded figures (a final loss, an
accuracy) stay what they were.
"""
import math
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "train", "tests", "python"))
from iresnet_ref import IResNet  # noqa: E402

# (blocks per stage, stem width) of facekit's ResNet architectures.
NETS = {"tiny": ((1, 1, 1, 1), 16), "resnet50": ((3, 4, 6, 3), 64)}


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


def shortcut(inplanes, planes, stride):
    """The projection shortcut of a stage's first block, None where the identity fits."""
    if stride == 1 and inplanes == planes * 4:
        return None
    return nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False), nn.BatchNorm2d(planes * 4))


class FaceResNet(nn.Module):
    """facekit's ResNet V1 trunk of `blocks` bottlenecks per stage and stem width `base`, with its
    embedding head. `shortcut_last` makes each block's downsampling shortcut after its
    convolutions rather than before (the order bench_eval_bin_reference.py's seeded weights were
    drawn in); the network is the same."""

    def __init__(self, image_size, blocks=NETS["resnet50"][0], base=NETS["resnet50"][1], emb=512, dropout=0.0,
                 shortcut_last=False):
        super().__init__()
        self.conv1 = nn.Conv2d(3, base, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(base)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        layers, inplanes = [], base
        for stage, n in enumerate(blocks):
            planes, stride = base << stage, 1 if stage == 0 else 2
            if shortcut_last:
                first = Bottleneck(inplanes, planes, stride)
                first.downsample = shortcut(inplanes, planes, stride)
            else:
                first = Bottleneck(inplanes, planes, stride, shortcut(inplanes, planes, stride))
            inplanes = planes * 4
            layers.append(nn.Sequential(first, *[Bottleneck(inplanes, planes) for _ in range(n - 1)]))
        self.layers = nn.Sequential(*layers)
        side = math.ceil(image_size / 32)
        self.head_bn = nn.BatchNorm2d(inplanes)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(inplanes * side * side, emb)
        self.features = nn.BatchNorm1d(emb)

    def forward(self, x):
        x = self.layers(self.maxpool(F.relu(self.bn1(self.conv1(x)))))
        return self.features(self.fc(self.dropout(self.head_bn(x)).flatten(1)))


def network(arch, image_size):
    """`facekit train --arch ARCH` (resnet50, tiny or iresnet50) at `image_size`."""
    if arch == "iresnet50":
        return IResNet("r50", image_size)
    blocks, base = NETS[arch]
    return FaceResNet(image_size, blocks, base)


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


def sgd_step(model, a, dev):
    """The training step of `model` (already built) with an ArcFace head over `a.classes` classes,
    on one synthetic batch of `a.batch_size` images of `a.image_size` already on `dev`, at
    `a.precision`, channels_last if `a.channels_last`. Returns step(), which runs one step and
    returns its loss."""
    model = model.to(dev)
    head = ArcFace(512, a.classes).to(dev)
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

    return step
