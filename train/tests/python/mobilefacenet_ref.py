"""MobileFaceNet written from its paper (Chen et al. 2018, arXiv:1804.07573, table 1) with
arcface_torch's `get_mbf` settings (width scale 2, bottleneck counts 1-4-6-2, expansion widths
128/128/256/256/512/256, a 64-group 3x3 convolution after the stem, 512 channels into the GDC),
in plain PyTorch, to check facekit's Rust network against: the module tree is laid out so that
`state_dict` names are arcface_torch's (`layers.<i>.layers.<j>...`, `conv_sep`,
`features.layers.{0,2,3}`); the GDC kernel is the final map's side instead of a fixed 7.

    python mobilefacenet_ref.py --size 112 --out DIR [--batch 2] [--seed 0]

writes DIR/weights.safetensors (the state_dict with random weights and random BN running
statistics, num_batches_tracked included), DIR/io.safetensors (`input` [N,3,S,S] and the eval-mode
`output` [N,512], `output_bf16` with the trunk under bfloat16 autocast and the
embedding layers in fp32 as arcface_torch, `output_bf16_all` with everything under autocast) and
DIR/shapes.json (name -> shape, num_batches_tracked left out), through ref_io.py.
"""

import argparse

import torch
from torch import nn

SCALE = 2


def map_side(size):
    # Stem and three bottlenecks of stride 2, each 3x3 with padding 1.
    for _ in range(4):
        size = (size - 1) // 2 + 1
    return size


class Unit(nn.Module):
    """conv (no bias) + BN [+ PReLU], held in `self.layers` as arcface_torch's Conv/LinearBlock."""

    def __init__(self, cin, cout, k=1, stride=1, groups=1, act=True, pad=None):
        super().__init__()
        pad = (k - 1) // 2 if pad is None else pad
        mods = [nn.Conv2d(cin, cout, k, stride, pad, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        if act:
            mods.append(nn.PReLU(cout))
        self.layers = nn.Sequential(*mods)

    def forward(self, x):
        return self.layers(x)


class Bottleneck(nn.Module):
    """Inverted residual: 1x1 up to `hidden`, depthwise 3x3 with the stride, linear 1x1 down."""

    def __init__(self, cin, cout, hidden, stride, shortcut):
        super().__init__()
        self.shortcut = shortcut
        self.layers = nn.Sequential(
            Unit(cin, hidden),
            Unit(hidden, hidden, 3, stride, groups=hidden),
            Unit(hidden, cout, act=False),
        )

    def forward(self, x):
        y = self.layers(x)
        return x + y if self.shortcut else y


class Stage(nn.Module):
    def __init__(self, c, n, hidden):
        super().__init__()
        self.layers = nn.Sequential(*[Bottleneck(c, c, hidden, 1, True) for _ in range(n)])

    def forward(self, x):
        return self.layers(x)


class Gdc(nn.Module):
    def __init__(self, side, embedding):
        super().__init__()
        self.layers = nn.Sequential(
            Unit(512, 512, side, 1, groups=512, act=False, pad=0),
            nn.Flatten(),
            nn.Linear(512, embedding, bias=False),
            nn.BatchNorm1d(embedding),
        )

    def forward(self, x):
        return self.layers(x)


class MobileFaceNet(nn.Module):
    def __init__(self, size, embedding=512, counts=(1, 4, 6, 2)):
        super().__init__()
        a, b = 64 * SCALE, 128 * SCALE
        self.layers = nn.ModuleList(
            [
                Unit(3, a, 3, 2),
                Unit(a, a, 3, 1, groups=64) if counts[0] == 1 else Stage(a, counts[0], 128),
                Bottleneck(a, a, 128, 2, False),
                Stage(a, counts[1], 128),
                Bottleneck(a, b, 256, 2, False),
                Stage(b, counts[2], 256),
                Bottleneck(b, b, 512, 2, False),
                Stage(b, counts[3], 256),
            ]
        )
        self.conv_sep = Unit(b, 512)
        self.features = Gdc(map_side(size), embedding)

    def trunk(self, x):
        for m in self.layers:
            x = m(x)
        return x

    def tail(self, x):
        return self.features(self.conv_sep(x))

    def forward(self, x):
        return self.tail(self.trunk(x))


def randomise(net, gen):
    """Weights of a realistic scale and non-trivial BN statistics."""
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if t.dim() == 4:
                fan_in = t.shape[1] * t.shape[2] * t.shape[3]
                t.copy_(torch.randn(t.shape, generator=gen) * (1.0 / fan_in) ** 0.5)
            elif t.dim() == 2:
                t.copy_(torch.randn(t.shape, generator=gen) / t.shape[1] ** 0.5)
            elif name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
            elif name.endswith("running_mean") or name.endswith("bias"):
                t.copy_(torch.randn(t.shape, generator=gen) * 0.1)
            else:  # BN scales and PReLU slopes
                t.copy_(torch.rand(t.shape, generator=gen) * 0.5 + 0.5)


def main():
    from ref_io import write_reference

    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    gen = torch.Generator().manual_seed(a.seed)
    net = MobileFaceNet(a.size)
    randomise(net, gen)
    write_reference(net, gen, a.batch, a.size, a.out)


if __name__ == "__main__":
    main()
