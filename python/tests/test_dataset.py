"""Reading and writing datasets: what is written reads back exactly, damage is named, and the
package stays free of libtorch and dlib."""

import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

import facekit
from conftest import lfw_photos, run, write_lfw


def test_records_read_back_are_the_bytes_pixels_and_labels_written(lfw):
    base, written = lfw
    ds = facekit.Dataset(base)
    assert len(ds) == len(written) == 48
    assert len(ds.manifest["shards"]) > 1, "the test wants several shards"
    identities = sorted({w["identity"] for w in written})
    assert [name for _, _, name in ds.label_map] == identities
    for i, w in enumerate(written):
        s = ds[i]
        assert s.payload == w["payload"], f"record {i}: stored bytes differ from the photo"
        pillow = np.asarray(Image.open(w["photo"]).convert("RGB"))
        assert s.image.dtype == np.uint8 and s.image.shape == (250, 250, 3)
        assert np.array_equal(s.image, pillow), f"record {i}: pixels differ from Pillow's decode of the photo"
        assert (s.identity, s.class_id) == (w["identity"], identities.index(w["identity"]))
        assert (s.gender, s.age, s.source) == (w["gender"], w["age"], "lfw100")
        assert s.path == f"{w['identity']}/{w['photo'].name}"
    assert [s.index for s in ds] == list(range(48))
    assert ds[-1].payload == written[-1]["payload"]
    with pytest.raises(IndexError):
        ds[48]


def test_a_dataset_written_from_arrays_reads_back_its_pixels(tmp_path):
    photos = lfw_photos(2, 3)
    arrays = [np.asarray(Image.open(p).convert("RGB")) for _, p in photos]
    for encoding in ("png", "raw"):
        with facekit.DatasetWriter(tmp_path / encoding, 250, encoding=encoding) as w:
            for (identity, _), a in zip(photos, arrays):
                w.add(a, identity)
        ds = facekit.Dataset(tmp_path / encoding)
        for i, a in enumerate(arrays):
            assert np.array_equal(ds[i].image, a), f"{encoding} record {i} is not lossless"


def test_the_writer_refuses_images_of_another_size_or_encoding(tmp_path):
    photo = lfw_photos(1, 1)[0][1]
    with facekit.DatasetWriter(tmp_path / "small", 112) as w:
        with pytest.raises(ValueError, match="250x250"):
            w.add(photo.read_bytes(), "a")
        with pytest.raises(ValueError, match=r"\(112, 112, 3\)"):
            w.add(np.zeros((250, 250, 3), np.uint8), "a")
        with pytest.raises(ValueError, match="do not decode"):
            w.add(b"not an image", "a")
        w.add(np.zeros((112, 112, 3), np.uint8), "a")
    assert len(facekit.Dataset(tmp_path / "small")) == 1


def test_a_writer_whose_block_raises_leaves_no_manifest(tmp_path):
    with pytest.raises(RuntimeError):
        with facekit.DatasetWriter(tmp_path / "half", 250) as w:
            w.add(lfw_photos(1, 1)[0][1].read_bytes(), "a")
            raise RuntimeError("stop")
    assert not (tmp_path / "half.manifest.json").exists()
    with pytest.raises(facekit.FacekitError, match="half"):
        facekit.Dataset(tmp_path / "half")


def test_a_source_whose_new_identities_are_interleaved_is_refused(tmp_path):
    data = lfw_photos(1, 1)[0][1].read_bytes()
    with facekit.DatasetWriter(tmp_path / "mixed", 250) as w:
        w.add(data, "a", source="one")
        w.add(data, "b", source="two")
        w.add(data, "a", source="one")  # known identities may come back at any time
        with pytest.raises(ValueError, match="source 'one'"):
            w.add(data, "c", source="one")
    m = facekit.Dataset(tmp_path / "mixed").manifest
    assert [(s["name"], s["class_offset"], s["classes"], s["records"]) for s in m["sources"]] == [("one", 0, 1, 2), ("two", 1, 1, 1)]


def flip_payload_byte(base, written, record):
    """Flips one byte inside record `record`'s payload; returns (shard path, record in shard, offset of the record)."""
    ds = facekit.Dataset(base)
    m = ds.manifest
    before = 0
    for shard in m["shards"]:
        if record < before + shard["records"]:
            break
        before += shard["records"]
    del ds
    path = base.parent / shard["file"]
    raw = bytearray(path.read_bytes())
    at = raw.find(written[record]["payload"][1000:1032])
    assert at > 0
    raw[at] ^= 0x40
    path.write_bytes(bytes(raw))
    return path, record - before


def test_a_corrupted_shard_raises_corrupt_record_error_naming_shard_record_and_offset(tmp_path):
    base = tmp_path / "lfw"
    written = write_lfw(base, people=3, per_person=4)
    shard, local = flip_payload_byte(base, written, 5)
    ds = facekit.Dataset(base)
    ds[4]
    with pytest.raises(facekit.CorruptRecordError) as e:
        ds[5]
    assert e.value.shard == str(shard) and e.value.record == local
    assert e.value.offset > 0 and str(shard) in str(e.value) and f"record {local}" in str(e.value)
    assert isinstance(e.value, facekit.FacekitError) and isinstance(e.value, OSError)
    report = ds.verify()
    assert not report["ok"]
    # The record, and the whole file's CRC against the manifest's.
    problems = [p for s in report["shards"] for p in s["problems"]]
    assert [(p["file"], p["record"], p["offset"]) for p in problems if p["record"] is not None] == [(str(shard), local, e.value.offset)]
    loader = facekit.Loader(ds, 4, 112, threads=1, shuffle=False, drop_last=False)
    with pytest.raises(facekit.CorruptRecordError) as e2:
        list(loader)
    assert (e2.value.shard, e2.value.record, e2.value.offset) == (str(shard), local, e.value.offset)


def test_verify_reports_what_facekit_verify_shard_reports(lfw, facekit_bin):
    base, _ = lfw
    ours = facekit.Dataset(base).verify(decode=True)
    cli = run([facekit_bin, "verify-shard", "--decode", "--json", base])
    assert cli.returncode == 0, cli.stderr
    theirs = json.loads(cli.stdout)
    assert ours["ok"] and theirs["ok"]
    assert ours["shards"] == theirs["datasets"][0]["shards"]


def test_importing_facekit_and_reading_a_dataset_loads_neither_libtorch_nor_dlib(lfw):
    base, _ = lfw
    script = textwrap.dedent(
        f"""
        import facekit, numpy
        ds = facekit.Dataset({str(base)!r})
        ds[0].image.sum()
        for batch in facekit.Loader(ds, 8, 112, threads=2):
            numpy.asarray(batch.images).sum()
        maps = open("/proc/self/maps").read()
        libs = sorted({{line.split()[-1] for line in maps.splitlines() if ".so" in line}})
        print("\\n".join(libs))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ""})
    assert out.returncode == 0, out.stderr
    libs = out.stdout.splitlines()
    assert any("_facekit" in lib for lib in libs), "the extension itself should be mapped"
    assert not [lib for lib in libs if "torch" in lib or "dlib" in lib or "c10" in lib], libs


def test_a_written_dataset_verifies_and_trains_with_facekit(lfw, facekit_bin, tmp_path):
    base, _ = lfw
    verified = run([facekit_bin, "verify-shard", "--decode", base])
    assert verified.returncode == 0, verified.stdout + verified.stderr
    train = [facekit_bin, "train", "FR", "--train-sets", base.name, "--data-dir", base.parent, "--arch", "tiny",
             "--image-size", "112", "--batch-size", "8", "--max-steps", "3", "--device", "cpu", "--run-name", "py",
             "--checkpoint-every", "0", "--log-every", "1"]
    trained = run(train, cwd=tmp_path)
    assert trained.returncode == 0, trained.stdout + trained.stderr
    log = [json.loads(line) for line in (tmp_path / "Model" / "py" / "train_log.jsonl").read_text().splitlines()]
    steps = [e for e in log if "loss" in e]
    assert [e["step"] for e in steps] == [1, 2, 3] and all(math.isfinite(e["loss"]) for e in steps), log


def test_a_dataset_being_read_cannot_be_replaced_by_a_writer(lfw):
    base, _ = lfw
    ds = facekit.Dataset(base)
    with pytest.raises(facekit.FacekitError, match="lfw"):
        facekit.DatasetWriter(base, 250)
    assert len(ds) == 48 and ds[0].payload
