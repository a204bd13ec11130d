"""Type stubs of facekit's Rust extension (python/src/). docs/PYTHON.md is the guide."""

import os
from typing import Any, Iterator, Literal, Optional, Sequence, Union

import numpy as np

__version__: str

PathLike = Union[str, "os.PathLike[str]"]

class FacekitError(OSError):
    """A dataset cannot be opened, read or written; the message names the file."""

class CorruptRecordError(FacekitError):
    """A record fails its checks (magic, bounds, CRC, manifest) or does not decode."""

    shard: str
    """The shard file that holds the record."""
    record: Optional[int]
    """The record's number in that shard (None for damage outside any record)."""
    offset: int
    """Byte offset in the shard file where the problem was found."""
    origin: Optional[str]
    """The origin path stored in the record, when it could be read that far."""

class CorruptRecordWarning(RuntimeWarning):
    """A loader with skip_corrupt=True skipped a corrupt record (the message says where)."""

class Tensor:
    """Read-only, C-contiguous bytes owned by facekit (a batch slot of the loader's ring, or labels).

    ``numpy.asarray(t)`` and ``torch.from_dlpack(t)`` view it without a copy and keep it alive;
    the ring slot goes back to the loader when the last view is gone.
    """

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape."""
    @property
    def dtype(self) -> Literal["uint8", "int64", "bool"]:
        """numpy's name of the element type."""
    @property
    def nbytes(self) -> int:
        """Size in bytes."""
    @property
    def __array_interface__(self) -> dict[str, Any]:
        """numpy's array interface (version 3), read-only."""
    def __dlpack__(
        self,
        *,
        stream: Any = None,
        max_version: Optional[tuple[int, int]] = None,
        dl_device: Optional[tuple[int, int]] = None,
        copy: Optional[bool] = None,
    ) -> Any:
        """A DLPack capsule over the bytes (CPU; no copy, so ``copy=True`` is refused)."""
    def __dlpack_device__(self) -> tuple[int, int]:
        """(1, 0): the CPU."""
    def __len__(self) -> int:
        """Length of the first dimension."""

class Sample:
    """One record of a Dataset, decoded."""

    image: np.ndarray
    """The image, uint8 of shape (height, width, 3), RGB."""
    class_id: Optional[int]
    """Identity class id, None where unknown."""
    identity: Optional[str]
    """Identity name from the label map, None where unknown."""
    source: Optional[str]
    """Source name from the manifest."""
    source_id: int
    """Source number as stored in the record."""
    gender: Optional[int]
    """0 male, 1 female, None where unknown."""
    age: Optional[int]
    """Age in years, None where unknown."""
    path: str
    """The original file's path relative to its input root (may be empty)."""
    payload: bytes
    """The encoded image exactly as stored."""
    index: int
    """The record's number in the dataset."""

class Dataset:
    """A facekit dataset opened for reading (under a shared lock: no facekit writer replaces it).

    Args:
        path: a dataset name (``training/celeb``), its manifest path, or an ``os.PathLike``.

    Raises:
        FacekitError: the manifest, label map or a shard is missing, unreadable or inconsistent.
        CorruptRecordError: a shard's header, index or footer is damaged.
    """

    def __init__(self, path: PathLike) -> None: ...
    def __len__(self) -> int:
        """Number of records."""
    def __getitem__(self, i: int) -> Sample:
        """Record ``i`` (negative counts from the end), checked and decoded.

        Raises:
            IndexError: ``i`` is out of range.
            CorruptRecordError: the record fails its checks or does not decode.
        """
    def __iter__(self) -> Iterator[Sample]: ...
    @property
    def name(self) -> str:
        """The dataset's name."""
    @property
    def manifest(self) -> dict[str, Any]:
        """The manifest (docs/FORMAT.md) as a dict."""
    @property
    def label_map(self) -> list[tuple[int, str, str]]:
        """``(class_id, source, identity)`` per class; the list index is the class id."""
    def class_ids(self) -> list[Optional[int]]:
        """The class id of every record, from the shard indexes alone (None where unknown)."""
    def verify(self, decode: bool = False) -> dict[str, Any]:
        """Checks every byte (and with ``decode=True`` decodes every image), as
        ``facekit verify-shard --json`` does: ``ok``, the manifest's ``problems`` and one report
        per shard in ``shards``, each problem naming file, record and byte offset."""

class Batch:
    """A whole batch, as the loader decoded it. Every array is a Tensor viewed without a copy."""

    n: int
    """Number of images."""
    size: int
    """Side of every image in pixels."""
    epoch: int
    """The epoch it belongs to."""
    index: int
    """Its number within the epoch, for this rank."""
    images: Tensor
    """uint8 (n, size, size, 3), RGB, NHWC, augmented (flip, crop, colours as asked)."""
    labels: Tensor
    """int64 (n,): class id in the loader's label space, -1 where unknown."""
    gender: Tensor
    """int64 (n,): 0 male, 1 female, -1 where unknown."""
    age: Tensor
    """int64 (n,): years, -1 where unknown."""
    indices: Tensor
    """int64 (n,): record number over the loader's concatenated datasets."""
    flipped: Tensor
    """bool (n,): whether each image was mirrored."""
    def __len__(self) -> int: ...

class Loader:
    """facekit's loader: shuffled, augmented batches decoded by Rust threads with the GIL released.

    Same datasets, seed, rank and world size -> the same batches as ``facekit train``, whatever
    the thread count. Iterating gives the rest of the current epoch, then moves to the next one.

    Args:
        datasets: a Dataset, a dataset path, or a list of them (concatenated; datasets with
            different label maps get their class ids offset, see ``class_offsets``).
        batch_size: images per batch on this rank.
        image_size: side of the output images in pixels (records of another size are resized).
        shuffle: shuffle every epoch (False reads in stored order; global order only).
        order: ``"global"`` (one seeded permutation; as ``facekit train``) or ``"quasi-random"``
            (pages shuffled, records drawn from ``window`` open pages: for data larger than memory).
        window: pages open at once in the quasi-random order.
        read_ahead: read pages ahead and drop them once passed (quasi-random or stored order).
        seed: seed of the shuffle and of the augmentation draws.
        epoch: the epoch to start at.
        rank: this process's rank among ``world_size`` data-parallel processes.
        world_size: number of processes sharing each epoch (their batches are disjoint).
        threads: decode threads (default: the machine's cores); 0 decodes in ``__next__``.
        prefetch: batches decoded ahead (default ``2 * threads``).
        flip: mirror each image with probability 1/2.
        crop: random crop, keeping a side fraction in ``[1 - crop, 1]`` (0: off).
        color_jitter: brightness and contrast factors in ``[1 - j, 1 + j]`` (0: off).
        grey: probability of turning an image grey.
        drop_last: drop each epoch's last, incomplete batch (``facekit train`` does).
        skip_corrupt: replace a corrupt record by the next good one of the epoch, with a
            ``CorruptRecordWarning`` for each (listed in ``corrupt_records``), instead of raising.

    Raises:
        ValueError: settings that cannot work (rank not below world size, no batch, ...).
        FacekitError: a dataset cannot be opened.
    """

    def __init__(
        self,
        datasets: Union[Dataset, PathLike, Sequence[Union[Dataset, PathLike]]],
        batch_size: int = 128,
        image_size: int = 112,
        *,
        shuffle: bool = True,
        order: Literal["global", "quasi-random"] = "global",
        window: int = 16,
        read_ahead: bool = False,
        seed: int = 0,
        epoch: int = 0,
        rank: int = 0,
        world_size: int = 1,
        threads: Optional[int] = None,
        prefetch: Optional[int] = None,
        flip: bool = True,
        crop: float = 0.0,
        color_jitter: float = 0.0,
        grey: float = 0.0,
        drop_last: bool = True,
        skip_corrupt: bool = False,
    ) -> None: ...
    def __len__(self) -> int:
        """Batches per epoch for this rank."""
    def __iter__(self) -> "Loader": ...
    def __next__(self) -> Batch:
        """The next batch; StopIteration at the end of the epoch (the loader then moves to the
        next epoch).

        Raises:
            CorruptRecordError: a record of the batch is corrupt (without ``skip_corrupt``); the
                position stays on that batch.
        """
    @property
    def epoch(self) -> int:
        """The epoch the next batch comes from."""
    def set_epoch(self, epoch: int) -> None:
        """Starts epoch ``epoch`` from its first batch."""
    def state_dict(self) -> dict[str, Any]:
        """The position: ``epoch`` and ``batch`` (the next batch to yield), and the settings that
        decide the batches (``seed``, ``batch_size``, ``world_size``, ``rank``, ``records``,
        ``order``, ``shuffle``, ``version``). Plain ints and strings."""
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resumes at ``state``'s position: the next batch is the one an uninterrupted loader would
        have yielded. Raises ValueError when the settings differ (the rank may differ)."""
    @property
    def records(self) -> int:
        """Total records over all datasets."""
    @property
    def num_classes(self) -> int:
        """Classes in the combined label space."""
    @property
    def class_offsets(self) -> list[int]:
        """Offset added to each dataset's class ids."""
    @property
    def slots_allocated(self) -> int:
        """Batch slots the loader's ring has allocated so far (it grows only while Python keeps
        more batches alive than the ring holds)."""
    @property
    def corrupt_skipped(self) -> int:
        """Corrupt records skipped so far (``skip_corrupt``)."""
    @property
    def corrupt_records(self) -> list[tuple[str, int, int, str]]:
        """The latest skipped records (at most 100): ``(shard, record, offset, message)``."""

class DatasetWriter:
    """Writes a facekit dataset: shards appear only once complete and fsynced, the manifest last
    (on ``close()``, or at the end of a ``with`` block that raised nothing), under the dataset's
    exclusive lock. The result verifies with ``facekit verify-shard`` and trains with
    ``facekit train``.

    Args:
        path: the dataset to write, e.g. ``training/celeb`` (its files are ``celeb.*`` there);
            an earlier dataset of that name is replaced.
        image_size: every image's side in pixels, or a ``(width, height)`` pair.
        encoding: ``"jpeg"``, ``"png"`` or ``"raw"`` (how arrays are stored; bytes must already
            be in this encoding).
        quality: JPEG quality for arrays encoded here.
        shard_size: bytes per shard (about).
    """

    def __init__(
        self,
        path: PathLike,
        image_size: Union[int, tuple[int, int]],
        *,
        encoding: Literal["jpeg", "png", "raw"] = "jpeg",
        quality: int = 95,
        shard_size: int = 256 << 20,
    ) -> None: ...
    def add(
        self,
        image: Union[bytes, np.ndarray],
        identity: Optional[str] = None,
        *,
        source: str = "default",
        gender: Optional[int] = None,
        age: Optional[int] = None,
        path: str = "",
    ) -> int:
        """Appends one face and returns its record number.

        Args:
            image: encoded bytes in the dataset's encoding (checked to decode to its size), or a
                uint8 array of shape (height, width, 3), RGB, encoded here.
            identity: the person's name; each new name gets the next class id. None: unknown.
            source: the collection it comes from; a source's new identities come together.
            gender: 0 male, 1 female, None unknown.
            age: years, None unknown.
            path: where the photo came from (kept in the record).

        Raises:
            ValueError: an image of another size or encoding, a label out of range.
        """
    def close(self) -> dict[str, Any]:
        """Writes the last shard, the label map and the manifest; returns the manifest."""
    def __len__(self) -> int:
        """Records written so far."""
    def __enter__(self) -> "DatasetWriter": ...
    def __exit__(self, *exc: Any) -> bool: ...
