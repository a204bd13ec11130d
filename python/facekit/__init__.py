"""facekit from Python: checksummed face datasets, the loader ``facekit train`` uses, and a writer.

- :class:`Dataset` reads a dataset (``len``, ``ds[i]`` -> :class:`Sample`, ``manifest``,
  ``label_map``, ``verify()``).
- :class:`Loader` streams whole batches (:class:`Batch`) decoded by Rust threads with the GIL
  released; ``numpy.asarray(batch.images)`` and ``torch.from_dlpack(batch.images)`` view them
  without a copy. Same seed, rank and world size -> the same batches as ``facekit train``;
  ``state_dict()`` / ``load_state_dict()`` resume mid-epoch exactly.
- :class:`TorchDataset` (``facekit.TorchDataset``, needs torch) wraps a loader as a
  ``torch.utils.data.IterableDataset`` that takes rank and world size from ``torch.distributed``.
- :class:`DatasetWriter` writes a dataset from encoded images or arrays.

Errors: :class:`FacekitError` (an ``OSError``) for files, :class:`CorruptRecordError` for a
record (attributes ``shard``, ``record``, ``offset``, ``origin``), ``ValueError`` for settings.
Importing facekit loads neither torch nor dlib; docs/PYTHON.md is the guide.
"""

from typing import TYPE_CHECKING

from ._facekit import (
    Batch,
    CorruptRecordError,
    CorruptRecordWarning,
    Dataset,
    DatasetWriter,
    FacekitError,
    Loader,
    Sample,
    Tensor,
    __version__,
)

__all__ = [
    "Batch",
    "CorruptRecordError",
    "CorruptRecordWarning",
    "Dataset",
    "DatasetWriter",
    "FacekitError",
    "Loader",
    "Sample",
    "Tensor",
    "TorchDataset",
    "__version__",
]

if TYPE_CHECKING:
    from ._torch import TorchDataset


def __getattr__(name):
    # torch is imported only when the adapter is asked for: reading a dataset must not load it.
    if name == "TorchDataset":
        from ._torch import TorchDataset

        return TorchDataset
    raise AttributeError(f"module 'facekit' has no attribute {name!r}")
