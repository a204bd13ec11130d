"""Shared fixtures: real photos from ../shared/data, the workspace's binaries, small datasets.

A missing binary or photo folder fails the test (never skips): scripts/test.sh builds the
binaries and names them in FACEKIT_BIN and FACEKIT_TRAIN_BATCHES_BIN.
"""

import os
import subprocess
from pathlib import Path

import pytest

import facekit

ROOT = Path(__file__).resolve().parents[2]


def shared_data() -> Path:
    """The real photos (FACEKIT_SHARED_DATA, or ../shared/data beside the workspace)."""
    p = Path(os.environ.get("FACEKIT_SHARED_DATA", ROOT / ".." / "shared" / "data"))
    assert (p / "lfw100").is_dir(), f"no real photos at {p}: set FACEKIT_SHARED_DATA"
    return p


def workspace_binary(env: str, default: str) -> Path:
    """A binary of the workspace: $env, or the debug build's."""
    p = Path(os.environ.get(env, ROOT / "target" / "debug" / default))
    assert p.is_file(), f"{p} does not exist: build it (scripts/test.sh does) or set {env}"
    return p


def lfw_photos(people: int, per_person: int):
    """(identity, photo path) of the first `people` lfw100 people with `per_person` photos each."""
    out = []
    dirs = sorted(d for d in (shared_data() / "lfw100").iterdir() if d.is_dir())
    for d in dirs[:people]:
        out += [(d.name, f) for f in sorted(d.glob("*.jpg"))[:per_person]]
    return out


def write_lfw(path: Path, people: int = 8, per_person: int = 6) -> list:
    """A dataset of real 250x250 lfw100 JPEGs stored as they are; returns what was written."""
    written = []
    with facekit.DatasetWriter(path, 250, shard_size=256 << 10) as w:
        for k, (identity, photo) in enumerate(lfw_photos(people, per_person)):
            data = photo.read_bytes()
            gender, age = (k % 2, 20 + k) if k % 3 else (None, None)
            w.add(data, identity, source="lfw100", gender=gender, age=age, path=f"{identity}/{photo.name}")
            written.append(dict(identity=identity, payload=data, photo=photo, gender=gender, age=age))
    return written


@pytest.fixture(scope="session")
def lfw(tmp_path_factory):
    """A dataset of 48 real photos (8 people), several shards, and what was written into it."""
    base = tmp_path_factory.mktemp("lfw") / "lfw"
    written = write_lfw(base)
    return base, written


@pytest.fixture(scope="session")
def facekit_bin() -> Path:
    return workspace_binary("FACEKIT_BIN", "facekit")


@pytest.fixture(scope="session")
def train_batches_bin() -> Path:
    return workspace_binary("FACEKIT_TRAIN_BATCHES_BIN", "examples/train_batches")


def run(args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, **kw)
