"""The loader as a ``torch.utils.data.IterableDataset`` (imported only when asked for)."""

import torch
import torch.distributed as dist
from torch.utils.data import IterableDataset, get_worker_info

from ._facekit import Loader


def _distributed_rank(rank, world_size):
    """rank and world size: given, or torch.distributed's when it is initialised."""
    if dist.is_available() and dist.is_initialized():
        group = (dist.get_rank(), dist.get_world_size())
        if (rank, world_size) not in ((None, None), group):
            raise ValueError(
                f"rank {rank} of {world_size} was given, but torch.distributed says rank {group[0]} of {group[1]}"
            )
        return group
    return (rank or 0, world_size or 1)


class TorchDataset(IterableDataset):
    """facekit's loader as an IterableDataset of whole batches, ``(images, labels)``.

    ``images`` is a uint8 tensor of shape (n, size, size, 3) (RGB, NHWC) that shares the loader's
    memory, ``labels`` an int64 tensor (-1 where unknown). Give it to
    ``torch.utils.data.DataLoader(ds, batch_size=None)`` (the batches are already made; the
    loader has its own decode threads, so ``num_workers=0``), and normalise on the device:
    ``x = images.to(device).permute(0, 3, 1, 2).float().div(127.5).sub(1)``.

    Args:
        datasets: a ``facekit.Dataset``, a dataset path, or a list of them.
        batch_size: images per batch on this rank.
        image_size: side of the images in pixels.
        rank, world_size: this process's share; by default ``torch.distributed``'s when it is
            initialised (giving other values then is an error), else 0 and 1.
        **loader_args: every other argument of ``facekit.Loader`` (seed, shuffle, threads, ...).
    """

    def __init__(self, datasets, batch_size, image_size=112, *, rank=None, world_size=None, **loader_args):
        super().__init__()
        rank, world_size = _distributed_rank(rank, world_size)
        self.loader = Loader(datasets, batch_size, image_size, rank=rank, world_size=world_size, **loader_args)

    def __iter__(self):
        info = get_worker_info()
        if info is not None and info.num_workers > 1:
            raise RuntimeError(
                "facekit.TorchDataset in a DataLoader with num_workers > 1 would give every worker the same "
                "batches: use num_workers=0 (the loader decodes in its own threads)"
            )
        for batch in self.loader:
            yield torch.from_dlpack(batch.images), torch.from_dlpack(batch.labels)

    def __len__(self):
        return len(self.loader)

    def set_epoch(self, epoch):
        """Starts epoch ``epoch`` from its first batch."""
        self.loader.set_epoch(epoch)

    def state_dict(self):
        """The loader's position (see ``facekit.Loader.state_dict``)."""
        return self.loader.state_dict()

    def load_state_dict(self, state):
        """Resumes at a position saved by ``state_dict``."""
        self.loader.load_state_dict(state)
