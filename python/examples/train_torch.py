"""Trains a small face classifier in PyTorch from a facekit dataset, with facekit's loader.

    python python/examples/train_torch.py training/celeb --epochs 2 --device cpu

Shows the pieces a real script (arcface_torch, a Lightning module) needs: the IterableDataset
adapter (rank and world size from torch.distributed when it is initialised), normalisation on the
device, and the loader's state saved in the checkpoint so that a restart resumes mid-epoch on the
very next batch. Without a dataset of your own, `--demo PHOTOS` first writes one from a folder of
`PERSON/*.jpg` photos (for example ../shared/data/lfw100) with facekit.DatasetWriter.
"""

import argparse
import os
from pathlib import Path

import torch
from torch.utils.data import DataLoader

import facekit


def write_demo(photos: Path, out: Path, side: int = 250) -> None:
    """A dataset of the JPEGs under photos/PERSON/, stored as they are (they must be side x side)."""
    with facekit.DatasetWriter(out, side) as w:
        for person in sorted(p for p in photos.iterdir() if p.is_dir()):
            for photo in sorted(person.glob("*.jpg")):
                w.add(photo.read_bytes(), person.name, path=f"{person.name}/{photo.name}")


def small_net(classes: int, size: int) -> torch.nn.Module:
    """A few convolutions and a linear classifier: enough to see the loss fall."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, stride=2, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
        torch.nn.Conv2d(16, 32, 3, stride=2, padding=1), torch.nn.BatchNorm2d(32), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(32, classes),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", help="a facekit dataset (name or manifest path)")
    ap.add_argument("--demo", type=Path, help="first write DATASET from this folder of PERSON/*.jpg photos")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--checkpoint", type=Path, default=Path("train_torch.pt"))
    args = ap.parse_args()
    if args.demo:
        write_demo(args.demo, Path(args.dataset))

    data = facekit.TorchDataset(args.dataset, batch_size=args.batch_size, image_size=args.image_size, threads=args.threads, seed=0)
    loader = DataLoader(data, batch_size=None, num_workers=0, pin_memory=args.device.startswith("cuda"))
    model = small_net(data.loader.num_classes, args.image_size).to(args.device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    start = 0
    if args.checkpoint.exists():
        ckpt = torch.load(args.checkpoint)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["opt"])
        data.load_state_dict(ckpt["loader"])  # the next batch is the one the interrupted run would have had
        start = ckpt["loader"]["epoch"]
        print(f"resumed at epoch {start}, batch {ckpt['loader']['batch']}")
    for epoch in range(start, args.epochs):
        total, n = 0.0, 0
        for images, labels in loader:
            x = images.to(args.device, non_blocking=True).permute(0, 3, 1, 2).float().div(127.5).sub(1)
            y = labels.to(args.device, non_blocking=True)
            loss = torch.nn.functional.cross_entropy(model(x), y, ignore_index=-1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, n = total + loss.item(), n + 1
        print(f"epoch {epoch}: mean loss {total / max(n, 1):.3f} over {n} batches")
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "loader": data.state_dict()}, args.checkpoint)


if __name__ == "__main__":
    main()
