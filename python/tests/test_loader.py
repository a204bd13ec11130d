"""facekit.Loader: facekit train's batches, rank shares, exact resume, batches without a copy."""

import json
import warnings
import zlib

import numpy as np
import pytest
import torch

import facekit
from conftest import run, write_lfw


def batches(loader):
    return [(np.asarray(b.indices).tolist(), np.asarray(b.labels).tolist(), np.asarray(b.flipped).tolist(), zlib.crc32(np.asarray(b.images).tobytes())) for b in loader]


@pytest.mark.parametrize("seed,rank,world_size", [(7, 0, 1), (7, 0, 2), (7, 1, 2), (123, 2, 3)])
def test_batches_equal_facekit_trains_for_the_same_seed_rank_and_world_size(lfw, train_batches_bin, seed, rank, world_size):
    base, _ = lfw
    recorded = run([train_batches_bin, base, 4, 112, seed, rank, world_size, 1])
    assert recorded.returncode == 0, recorded.stderr
    theirs = [json.loads(line) for line in recorded.stdout.splitlines()]
    ours = batches(facekit.Loader(base, 4, 112, seed=seed, rank=rank, world_size=world_size, epoch=1, threads=2))
    assert len(ours) == len(theirs) > 0
    for k, (o, t) in enumerate(zip(ours, theirs)):
        assert o == (t["indices"], t["labels"], t["flipped"], t["crc32"]), f"batch {k} differs from facekit train's"


@pytest.mark.parametrize("order", ["global", "quasi-random"])
def test_the_ranks_records_are_disjoint_and_cover_the_epoch(lfw, order):
    base, _ = lfw
    ds = facekit.Dataset(base)
    shares = []
    for rank in range(3):
        loader = facekit.Loader(ds, 5, 64, order=order, seed=3, rank=rank, world_size=3, drop_last=False, threads=1)
        shares.append([i for b in loader for i in np.asarray(b.indices).tolist()])
    seen = [i for s in shares for i in s]
    assert sorted(seen) == list(range(len(ds))), "every record once over the ranks"
    assert all(len(set(a) & set(b)) == 0 for a in shares for b in shares if a is not b)


@pytest.mark.parametrize("order", ["global", "quasi-random"])
def test_a_loader_restored_from_its_state_dict_yields_the_same_remaining_batches(lfw, order):
    base, _ = lfw
    args = dict(batch_size=4, image_size=96, order=order, seed=11, crop=0.1, color_jitter=0.2, threads=2)
    whole = facekit.Loader(base, **args)
    epoch0, epoch1 = batches(whole), batches(whole)
    assert epoch0 != epoch1, "epochs are shuffled differently"
    for k in (0, 1, 5, len(epoch0) - 1, len(epoch0)):
        first = facekit.Loader(base, **args)
        it = iter(first)
        head = [next(it) for _ in range(k)]
        assert [b.index for b in head] == list(range(k))
        state = json.loads(json.dumps(first.state_dict()))
        assert (state["epoch"], state["batch"]) == (0, k)
        resumed = facekit.Loader(base, **args)
        resumed.load_state_dict(state)
        assert batches(resumed) == epoch0[k:], f"stopped after {k} batches"
        assert batches(resumed) == epoch1, "and the next epoch follows"


def test_a_state_from_other_settings_is_refused(lfw):
    base, _ = lfw
    state = facekit.Loader(base, 4, 64, seed=1).state_dict()
    for other in (dict(seed=2), dict(batch_size=8), dict(world_size=2, rank=1), dict(shuffle=False)):
        args = dict(batch_size=4, seed=1) | other
        with pytest.raises(ValueError, match="would not continue"):
            facekit.Loader(base, image_size=64, **args).load_state_dict(state)
    facekit.Loader(base, 4, 64, seed=1, world_size=2, rank=1).load_state_dict(facekit.Loader(base, 4, 64, seed=1, world_size=2).state_dict())


def test_batches_reach_numpy_and_torch_without_a_copy(lfw):
    base, _ = lfw
    loader = facekit.Loader(base, 8, 112, threads=2)
    batch = next(iter(loader))
    a = np.asarray(batch.images)
    t = torch.from_dlpack(batch.images)
    assert a.shape == (8, 112, 112, 3) and a.dtype == np.uint8 and not a.flags.writeable
    assert t.shape == (8, 112, 112, 3) and t.dtype == torch.uint8
    assert a.ctypes.data == t.data_ptr() == batch.images.__array_interface__["data"][0]
    assert torch.equal(t, torch.from_numpy(a.copy()))
    labels = torch.from_dlpack(batch.labels)
    assert labels.dtype == torch.int64 and labels.tolist() == np.asarray(batch.labels).tolist()
    assert torch.from_dlpack(batch.flipped).dtype == torch.bool
    ds = facekit.Dataset(base)
    for i, idx in enumerate(np.asarray(batch.indices)):
        assert labels[i].item() == ds[int(idx)].class_id


def test_a_batch_slot_returns_to_the_ring_when_python_drops_the_batch(lfw):
    base, _ = lfw
    loader = facekit.Loader(base, 2, 64, threads=2, prefetch=2)
    for _ in range(3):
        for b in loader:
            t = torch.from_dlpack(b.images)
            del t, b
    steady = loader.slots_allocated
    kept = [np.asarray(b.images) for b in loader]
    assert loader.slots_allocated >= steady + len(kept) - 4, "batches kept alive by numpy keep their slots"
    assert steady <= 6, f"a consumer that drops its batches needs no new slot ({steady} allocated)"
    del kept
    before = loader.slots_allocated
    for b in loader:
        pass
    assert loader.slots_allocated == before, "the slots numpy held came back"


def test_settings_that_cannot_work_are_refused_before_any_work(lfw):
    base, _ = lfw
    for args, msg in [(dict(rank=2, world_size=2), "rank 2 is not below world size 2"), (dict(batch_size=0), "batch size"),
                      (dict(order="sorted"), "order 'sorted'"), (dict(order="quasi-random", shuffle=False), "quasi-random"),
                      (dict(batch_size=100), "no batch")]:
        with pytest.raises(ValueError, match=msg):
            facekit.Loader(base, **(dict(image_size=64) | args))


def test_skipped_corrupt_records_are_warned_about_and_listed(tmp_path):
    from test_dataset import flip_payload_byte

    base = tmp_path / "lfw"
    written = write_lfw(base, people=3, per_person=4)
    shard, local = flip_payload_byte(base, written, 2)
    loader = facekit.Loader(base, 4, 64, shuffle=False, skip_corrupt=True, threads=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = [i for b in loader for i in np.asarray(b.indices).tolist()]
    assert 2 not in got and len(got) == 12, "the corrupt record is replaced, batches stay whole"
    assert [str(w.message) for w in caught if issubclass(w.category, facekit.CorruptRecordWarning)] != []
    assert loader.corrupt_skipped == 1
    assert [(s, r) for s, r, _, _ in loader.corrupt_records] == [(str(shard), local)]


def test_datasets_with_their_own_label_maps_are_loaded_with_offset_class_ids(lfw, tmp_path):
    base, _ = lfw
    other = tmp_path / "other"
    write_lfw(other, people=12, per_person=2)  # 12 identities, the first 8 the same people
    a, b = facekit.Dataset(base), facekit.Dataset(other)
    loader = facekit.Loader([base, b], 8, 64, drop_last=False, threads=1)
    assert loader.records == len(a) + len(b) and loader.num_classes == 8 + 12
    assert loader.class_offsets == [0, 8]
    seen = 0
    for batch in loader:
        for i, label in zip(np.asarray(batch.indices).tolist(), np.asarray(batch.labels).tolist()):
            expected = a[i].class_id if i < len(a) else 8 + b[i - len(a)].class_id
            assert label == expected, f"record {i}"
            seen += 1
    assert seen == len(a) + len(b)


def test_decoding_runs_with_the_gil_released(lfw):
    # With threads=0 the decode happens inside __next__: another Python thread can only run
    # meanwhile if the GIL is released around it.
    import threading
    import time

    base, _ = lfw
    loader = facekit.Loader(base, 48, 112, threads=0, drop_last=False, shuffle=False)
    ticks, stop = [], threading.Event()

    def tick():
        while not stop.is_set():
            ticks.append(time.perf_counter())

    ticker = threading.Thread(target=tick)
    ticker.start()
    time.sleep(0.01)
    t0 = time.perf_counter()
    batch = next(iter(loader))
    t1 = time.perf_counter()
    stop.set()
    ticker.join()
    assert batch.n == 48
    inside = [t for t in ticks if t0 < t < t1]
    assert len(inside) > 100, f"another thread ran {len(inside)} times during {1000 * (t1 - t0):.0f} ms of decoding"
