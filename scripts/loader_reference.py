#!/usr/bin/env python3
"""Reference loader for scripts/bench-loader.sh: PyTorch DataLoader + Pillow decode + random
horizontal flip + to-tensor (uint8 HWC, the same output facekit's loader yields), over the same
JPEG bytes (payloads.bin / payloads.idx written by `loader_bench pack`), held in memory like
facekit's memory-mapped shards. Prints one JSON line.

usage: loader_reference.py <bench-dir> <num_workers> <epochs> <batch>
"""
import io
import json
import sys
import time

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset


class JpegBytes(Dataset):
    """The packed JPEG payloads, decoded with Pillow, flipped with probability 1/2."""

    def __init__(self, bench_dir):
        self.blob = open(f"{bench_dir}/payloads.bin", "rb").read()
        self.offsets = np.fromfile(f"{bench_dir}/payloads.idx", dtype="<u8")

    def __len__(self):
        return len(self.offsets) - 1

    def __getitem__(self, i):
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        img = Image.open(io.BytesIO(self.blob[a:b])).convert("RGB")
        if torch.rand(1).item() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        return torch.from_numpy(np.array(img)), i


def main():
    bench_dir, workers, epochs, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    # One thread per process, so that "per core" means what it says.
    torch.set_num_threads(1)
    ds = JpegBytes(bench_dir)
    dl = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers,
                    persistent_workers=workers > 0, prefetch_factor=2 if workers > 0 else None)
    checksum = 0
    for x, _ in dl:  # untimed warm-up epoch (worker start-up, page cache)
        checksum += int(x[0, 0, 0, 0])
    t = time.perf_counter()
    images = 0
    for _ in range(epochs):
        for x, _ in dl:
            images += x.shape[0]
            checksum += int(x[-1, 0, 0, 0])
    secs = time.perf_counter() - t
    rate = images / secs
    print(json.dumps({"impl": "pytorch+pillow", "workers": workers, "size": 224, "images": images,
                      "seconds": round(secs, 3), "images_per_s": round(rate, 1),
                      "images_per_s_per_core": round(rate / max(workers, 1), 1), "checksum": checksum}))


if __name__ == "__main__":
    main()
