"""facekit.Loader seen from Python against PyTorch's DataLoader + Pillow and raw decode (issue 23).

Same JPEG records, same machine, same run: writes lfw100's 2,513 real 250x250 JPEGs as they are
into a dataset (facekit.DatasetWriter), then for each contender decodes them to 112x112 RGB with
a random flip, batch 128, shuffled, and prints one JSON line: images/s (wall) and images per
CPU-second (the whole process, threads and worker processes included). Also the cost of the
Python boundary per batch: a loader over 8x8 raw records (decode nearly free), and the price of
numpy.asarray + torch.from_dlpack on a batch.

usage: python scripts/bench_python_loader.py PHOTOS_DIR WORK_DIR [repeat]
"""

import io
import json
import os
import random
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import facekit

BATCH, SIZE = 128, 112


def cpu_seconds():
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def timed(name, images_fn, **extra):
    c0, t0 = cpu_seconds(), time.perf_counter()
    n = images_fn()
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    print(json.dumps({"what": name, "images": n, "wall_s": round(wall, 3), "images_per_s": round(n / wall, 1),
                      "images_per_cpu_s": round(n / cpu, 1), **extra}), flush=True)


def write(photos: Path, base: Path):
    if (base.parent / f"{base.name}.manifest.json").exists():
        return
    with facekit.DatasetWriter(base, 250) as w:
        for person in sorted(p for p in photos.iterdir() if p.is_dir()):
            for f in sorted(person.glob("*.jpg")):
                w.add(f.read_bytes(), person.name)


def facekit_loader(base, threads):
    def run():
        n = 0
        for b in facekit.Loader(base, BATCH, SIZE, threads=threads, seed=1):
            x = torch.from_dlpack(b.images)
            n += x.shape[0]
        return n
    return run


class PillowSet(torch.utils.data.Dataset):
    """What a PyTorch user writes: decode with Pillow, resize, flip, to a uint8 tensor."""

    def __init__(self, payloads):
        self.payloads = payloads

    def __len__(self):
        return len(self.payloads)

    def __getitem__(self, i):
        img = Image.open(io.BytesIO(self.payloads[i])).convert("RGB").resize((SIZE, SIZE), Image.BILINEAR)
        if random.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        return torch.from_numpy(np.array(img)), 0


def pillow_loader(payloads, workers):
    def run():
        dl = torch.utils.data.DataLoader(PillowSet(payloads), batch_size=BATCH, shuffle=True, drop_last=True, num_workers=workers)
        return sum(x.shape[0] for x, _ in dl)
    return run


def raw_pillow(payloads):
    def run():
        for p in payloads:
            Image.open(io.BytesIO(p)).convert("RGB").load()
        return len(payloads)
    return run


def boundary(work: Path):
    """Per-batch cost of the loader and the Python boundary when decoding costs nothing."""
    tiny = work / "tiny8"
    if not (work / "tiny8.manifest.json").exists():
        with facekit.DatasetWriter(tiny, 8, encoding="raw") as w:
            for i in range(BATCH * 200):
                w.add(np.full((8, 8, 3), i % 251, np.uint8), str(i % 100))
    loader = facekit.Loader(tiny, BATCH, 8, threads=1, flip=False)
    c0, t0 = cpu_seconds(), time.perf_counter()
    batches = sum(1 for b in loader if torch.from_dlpack(b.images) is not None)
    per_batch = (time.perf_counter() - t0) / batches
    cpu_per_batch = (cpu_seconds() - c0) / batches
    b = next(iter(loader))
    t0 = time.perf_counter()
    for _ in range(10000):
        np.asarray(b.images)
        torch.from_dlpack(b.images)
    views = (time.perf_counter() - t0) / 10000
    print(json.dumps({"what": "boundary", "us_per_batch_8x8_raw": round(per_batch * 1e6, 1), "cpu_us_per_batch_8x8_raw": round(cpu_per_batch * 1e6, 1),
                      "us_numpy_asarray_plus_torch_from_dlpack": round(views * 1e6, 2)}), flush=True)


def main():
    photos, work = Path(sys.argv[1]), Path(sys.argv[2])
    repeat = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    work.mkdir(parents=True, exist_ok=True)
    base = work / "lfw250"
    write(photos, base)
    ds = facekit.Dataset(base)
    payloads = [ds[i].payload for i in range(len(ds))]
    torch.set_num_threads(1)
    for r in range(repeat):
        for threads in (1, 2):
            timed("facekit.Loader", facekit_loader(base, threads), threads=threads, run=r)
        for workers in (0, 1, 2):
            timed("DataLoader+Pillow", pillow_loader(payloads, workers), workers=workers, run=r)
        timed("raw Pillow decode", raw_pillow(payloads), run=r)
        timed("facekit.Dataset[i] (decode, one Python call per image)", lambda: sum(1 for i in range(len(ds)) if ds[i].image is not None), run=r)
    boundary(work)


if __name__ == "__main__":
    main()
