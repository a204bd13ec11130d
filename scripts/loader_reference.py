#!/usr/bin/env python3
"""Reference loader for scripts/bench-loader.sh: PyTorch DataLoader + Pillow decode + random
horizontal flip + to-tensor (uint8 HWC, the same output facekit's loader yields), over the same
JPEG bytes (PREFIX.bin / PREFIX.idx written by `loader_bench pack`), held in memory like
facekit's memory-mapped shards. With 0 workers the DataLoader decodes in the main process
(Pillow alone, no worker processes). Prints one JSON line.

usage: loader_reference.py <payloads-prefix> <num_workers> <epochs> <batch> [CROP,JITTER,GREY]
       loader_reference.py --pixels <payloads-prefix> <pixels-file>
The second form compares Pillow's pixels with the raw RGB file `loader_bench compare` wrote
(libjpeg-turbo's pixels of the same payloads) and prints one JSON line.

With the last argument, torchvision's RandomResizedCrop (square, area scale [(1-CROP)^2, 1]),
ColorJitter(brightness=JITTER, contrast=JITTER) and RandomGrayscale(GREY) follow the flip: what
facekit's --random-crop, --color-jitter and --grey-prob do.
"""
import io
import json
import resource
import sys
import time

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset


class JpegBytes(Dataset):
    """The packed JPEG payloads, decoded with Pillow, flipped with probability 1/2."""

    def __init__(self, prefix, augment=None):
        self.augment = augment
        self.blob = open(f"{prefix}.bin", "rb").read()
        self.offsets = np.fromfile(f"{prefix}.idx", dtype="<u8")

    def __len__(self):
        return len(self.offsets) - 1

    def __getitem__(self, i):
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        img = Image.open(io.BytesIO(self.blob[a:b])).convert("RGB")
        if torch.rand(1).item() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        if self.augment is not None:
            img = self.augment(img)
        return torch.from_numpy(np.array(img)), i


def decode(ds, i):
    """Pillow's RGB pixels of payload `i`, as a numpy array."""
    a, b = int(ds.offsets[i]), int(ds.offsets[i + 1])
    return np.asarray(Image.open(io.BytesIO(ds.blob[a:b])).convert("RGB"))


def compare_pixels(prefix, pixels_file):
    ds = JpegBytes(prefix)
    first = decode(ds, 0)
    theirs = np.fromfile(pixels_file, dtype=np.uint8).reshape(len(ds), *first.shape)
    diff = np.stack([np.abs(decode(ds, i).astype(np.int16) - theirs[i]) for i in range(len(ds))])
    print(json.dumps({"compare": "libjpeg-turbo (facekit) vs Pillow " + Image.__version__, "size": int(first.shape[0]),
                      "images": len(ds), "identical_images": int((diff.reshape(len(ds), -1).max(axis=1) == 0).sum()),
                      "mean_abs_diff": round(float(diff.mean()), 4), "max_abs_diff": int(diff.max())}))


def main():
    if sys.argv[1] == "--pixels":
        return compare_pixels(sys.argv[2], sys.argv[3])
    prefix, workers, epochs, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    # One thread per process, so that "per core" means what it says.
    torch.set_num_threads(1)
    augment, spec = None, sys.argv[5] if len(sys.argv) > 5 else None
    if spec:
        from torchvision import transforms as T
        crop, jitter, grey = (float(x) for x in spec.split(","))
        side = decode(JpegBytes(prefix), 0).shape[0]
        augment = T.Compose([T.RandomResizedCrop(side, scale=((1 - crop) ** 2, 1.0), ratio=(1.0, 1.0)),
                             T.ColorJitter(brightness=jitter, contrast=jitter), T.RandomGrayscale(grey)])
    ds = JpegBytes(prefix, augment)
    # Workers end with each epoch, so that their CPU time lands in RUSAGE_CHILDREN.
    dl = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers,
                    prefetch_factor=2 if workers > 0 else None)
    checksum = 0
    for x, _ in dl:  # untimed warm-up epoch (worker start-up, page cache)
        checksum += int(x[0, 0, 0, 0])
    t = time.perf_counter()
    cpu0 = cpu_seconds()
    images = 0
    for _ in range(epochs):
        for x, _ in dl:
            images += x.shape[0]
            checksum += int(x[-1, 0, 0, 0])
    secs = time.perf_counter() - t
    cpu = cpu_seconds() - cpu0
    impl = "pillow" if workers == 0 else "pytorch+pillow"
    print(json.dumps({"impl": impl, "augment": spec or "flip", "workers": workers, "size": int(x.shape[1]), "images": images,
                      "seconds": round(secs, 3), "cpu_seconds": round(cpu, 3),
                      "images_per_s": round(images / secs, 1), "images_per_cpu_s": round(images / cpu, 1),
                      "checksum": checksum}))


def cpu_seconds():
    """User + system CPU time of this process and its finished workers: the box is shared with
    other work, so CPU time, not wall time, is what "per core" can honestly mean."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


if __name__ == "__main__":
    main()
