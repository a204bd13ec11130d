"""An IR-ResNet written from the ArcFace paper's description (Deng et al. 2019, section 3.2), in
plain PyTorch, to check facekit's Rust network against: same parameter names as insightface's
arcface_torch `iresnet` state_dict, FC sized from the input instead of a fixed 7x7.

    python iresnet_ref.py --arch r18 --size 112 --out DIR [--batch 2] [--seed 0]

writes DIR/weights.safetensors (the state_dict with random weights and random BN running
statistics, num_batches_tracked included), DIR/io.safetensors (`input` [N,3,S,S] and the eval-mode
`output` [N,512], `output_bf16` with the trunk under bfloat16 autocast and the
embedding layers in fp32 as arcface_torch, `output_bf16_all` with everything under autocast) and
DIR/shapes.json (name -> shape, num_batches_tracked left out), through ref_io.py. Usable as a
module too: `IResNet(arch, size)`.
"""

import argparse

import torch
from torch import nn

BLOCKS = {
    "r18": [2, 2, 2, 2],
    "r34": [3, 4, 6, 3],
    "r50": [3, 4, 14, 3],
    "r100": [3, 13, 30, 3],
    "r200": [6, 26, 60, 6],
}
WIDTHS = [64, 128, 256, 512]


def out_side(size):
    # Four stride-2 3x3 pad-1 convolutions; the stem keeps the size.
    for _ in range(4):
        size = (size + 2 - 3) // 2 + 1
    return size


class Block(nn.Module):
    """Pre-BN residual unit: BN, conv, BN, PReLU, strided conv, BN; projection on the shortcut."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.prelu = nn.PReLU(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        branch = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return branch + (x if self.downsample is None else self.downsample(x))


class IResNet(nn.Module):
    def __init__(self, arch, size, embedding=512):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.prelu = nn.PReLU(64)
        cin = 64
        for i, (n, w) in enumerate(zip(BLOCKS[arch], WIDTHS)):
            blocks = []
            for b in range(n):
                blocks.append(Block(cin, w, 2 if b == 0 else 1))
                cin = w
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.bn2 = nn.BatchNorm2d(512)
        self.dropout = nn.Dropout(0.0)
        s = out_side(size)
        self.fc = nn.Linear(512 * s * s, embedding)
        self.features = nn.BatchNorm1d(embedding)
        self.features.weight.requires_grad = False

    def trunk(self, x):
        x = self.prelu(self.bn1(self.conv1(x)))
        for i in range(4):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.dropout(torch.flatten(self.bn2(x), 1))

    def tail(self, x):
        return self.features(self.fc(x))

    def forward(self, x):
        return self.tail(self.trunk(x))


def randomise(net, gen):
    """Weights of a realistic scale (so 100 layers stay finite) and non-trivial BN statistics."""
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if t.dim() == 4:
                fan_in = t.shape[1] * t.shape[2] * t.shape[3]
                t.copy_(torch.randn(t.shape, generator=gen) * (0.5 / fan_in) ** 0.5)
            elif name == "fc.weight":
                t.copy_(torch.randn(t.shape, generator=gen) / t.shape[1] ** 0.5)
            elif name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
            elif name.endswith("running_mean") or name.endswith("bias"):
                t.copy_(torch.randn(t.shape, generator=gen) * 0.1)
            elif name == "features.weight":
                t.fill_(1.0)
            else:  # BN scales and PReLU slopes
                t.copy_(torch.rand(t.shape, generator=gen) * 0.5 + 0.5)


def main():
    from ref_io import write_reference

    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", choices=sorted(BLOCKS), required=True)
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    gen = torch.Generator().manual_seed(a.seed)
    net = IResNet(a.arch, a.size)
    randomise(net, gen)
    write_reference(net, gen, a.batch, a.size, a.out)


if __name__ == "__main__":
    main()
