"""The IterableDataset adapter: rank and world size from torch.distributed, and a few training
steps of a small model through torch's DataLoader."""

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

import facekit


def test_a_dataloader_over_the_adapter_trains_a_small_model(lfw):
    base, _ = lfw
    torch.manual_seed(0)
    ds = facekit.TorchDataset(base, batch_size=8, image_size=32, seed=0, threads=2)
    loader = DataLoader(ds, batch_size=None, num_workers=0)
    classes = facekit.Dataset(base).manifest["classes"]
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(32 * 32 * 3, classes))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    losses = []
    for epoch in range(6):
        for images, labels in loader:
            assert images.shape == (8, 32, 32, 3) and images.dtype == torch.uint8
            x = images.permute(0, 3, 1, 2).float().div(127.5).sub(1)
            loss = torch.nn.functional.cross_entropy(model(x), labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    assert len(losses) == 6 * len(ds) and np.isfinite(losses).all()
    assert np.mean(losses[-len(ds):]) < 0.5 * np.mean(losses[: len(ds)]), losses


def test_the_adapter_takes_rank_and_world_size_from_torch_distributed(lfw, monkeypatch):
    base, _ = lfw
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_rank", lambda group=None: 1)
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: 3)
    ds = facekit.TorchDataset(base, batch_size=4, image_size=32, seed=5)
    assert (ds.loader.state_dict()["rank"], ds.loader.state_dict()["world_size"]) == (1, 3)
    direct = facekit.Loader(base, 4, 32, seed=5, rank=1, world_size=3)
    assert [torch.from_dlpack(b.indices).tolist() for b in direct] == [
        torch.from_dlpack(b.indices).tolist() for b in ds.loader
    ]
    with pytest.raises(ValueError, match="torch.distributed says rank 1 of 3"):
        facekit.TorchDataset(base, batch_size=4, image_size=32, rank=0, world_size=2)


def test_the_adapter_refuses_several_dataloader_workers(lfw):
    base, _ = lfw
    ds = facekit.TorchDataset(base, batch_size=4, image_size=32)
    with pytest.raises(RuntimeError, match="num_workers"):
        next(iter(DataLoader(ds, batch_size=None, num_workers=2)))
