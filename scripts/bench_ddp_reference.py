#!/usr/bin/env python3
"""PyTorch reference for `train/examples/bench_ddp.rs` (scripts/bench-ddp.sh runs both).

One rank of a Gloo group over 127.0.0.1 (CPU) timing a training step with
torch.nn.parallel.DistributedDataParallel and without it (the same step on `ddp.module`), so the
all-reduce overhead is the difference. The same measurement as facekit's side:

- network: facekit's ResNet trunk with its embedding head (BN2d -> flatten -> FC 512 -> BN1d), as
  in scripts/bench_train_reference.py (scripts/bench_nets.py): `resnet50` (blocks [3, 4, 6, 3], width 64) or `tiny`
  (facekit's Arch::Tiny: blocks [1, 1, 1, 1], width 16); the parameter count is printed so the
  driver can check it equals facekit's;
- step: forward (train mode), MSE against a fixed random target, backward, gradients zeroed in
  place (as tch's zero_grad: detach_, zero_); each rank its own synthetic batch;
- DDP as constructed by default except broadcast_buffers=False: facekit's Reducer has no
  per-forward buffer broadcast, so leaving it on would time a collective facekit does not issue;
- `--buckets facekit`: DDP given the bucket caps for rebuilding that facekit's shim
  (train/src/dist/c10d_shim.cpp) passes its Reducer, to tell a difference of bucket layout from
  one of engine (see `facekit_rebuild_caps`);
- schedule: warm-up DDP steps (buckets are rebuilt after the first), then rounds of local steps and
  DDP steps; every step timed alone, a step's time the slower rank's (all-reduce MAX after the
  round, outside the timing); median per mode.

Rank 0 hosts the TCPStore on a free port and writes it to --port-file; the others wait for it.
Rank 0 prints one JSON line.
"""
import argparse
import datetime
import json
import os
import statistics
import sys
import time

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_nets import NETS, FaceResNet  # noqa: E402

TIMEOUT = datetime.timedelta(seconds=300)


def rendezvous(rank, world, port_file):
    """Rank 0 hosts the store on a free port and publishes it (written whole, then renamed)."""
    if rank == 0:
        store = dist.TCPStore("127.0.0.1", 0, world, True, TIMEOUT, wait_for_workers=False)
        with open(port_file + ".tmp", "w") as f:
            f.write(str(store.port))
        os.replace(port_file + ".tmp", port_file)
        return store
    start = time.monotonic()
    while not os.path.exists(port_file):
        if time.monotonic() - start > TIMEOUT.total_seconds():
            raise SystemExit(f"rank 0 did not publish its port in {port_file}")
        time.sleep(0.05)
    with open(port_file) as f:
        port = int(f.read().strip())
    return dist.TCPStore("127.0.0.1", port, world, False, TIMEOUT)


def facekit_rebuild_caps(model):
    """The `bucket_bytes_cap_list` (MiB) facekit's shim hands the Reducer, which the Reducer uses
    when it rebuilds the buckets after the first step.

    The shim assigns facekit's parameters (tch creation order: each stage's blocks, a block's
    downsample first, then the stem, then the head) to buckets of 1 MiB then 25 MiB, and passes
    those per-bucket limits, reversed, as that list; DistributedDataParallel passes an empty list
    (rebuild with 1 MiB then 25 MiB) unless given `bucket_cap_mb_list`.
    """
    order = []
    for stage in model.layers:
        for blk in stage:
            mods = ([blk.downsample] if blk.downsample is not None else []) + [blk.conv1, blk.bn1, blk.conv2, blk.bn2, blk.conv3, blk.bn3]
            order += [p for m in mods for p in m.parameters()]
    for m in (model.conv1, model.bn1, model.head_bn, model.fc, model.features):
        order += list(m.parameters())
    if len(order) != len(list(model.parameters())):
        raise AssertionError("facekit_rebuild_caps missed parameters")
    _, limits = dist._compute_bucket_assignment_by_size(order, [1 << 20, 25 << 20], [False] * len(order))
    return [lim / 2**20 for lim in reversed(limits)]


def spread(params):
    """The largest difference across ranks of any parameter's sum of |grad| (0: equal everywhere)."""
    hi = torch.tensor([p.grad.abs().sum(dtype=torch.float64).item() for p in params], dtype=torch.float64)
    lo = -hi
    dist.all_reduce(hi, dist.ReduceOp.MAX)
    dist.all_reduce(lo, dist.ReduceOp.MAX)
    return (hi + lo).abs().max().item()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rank", type=int, required=True)
    ap.add_argument("--world", type=int, default=2)
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--net", choices=sorted(NETS), default="tiny")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--image-size", type=int, default=32)
    # The Reducer collects runtime statistics on its first 10 iterations (and DDP logs them).
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--buckets", choices=["ddp", "facekit"], default="ddp", help="ddp: DDP's default bucket caps; facekit: those facekit's shim uses when rebuilding")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.rank)
    # facekit binds Gloo to 127.0.0.1; this is the same loopback device.
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")

    store = rendezvous(a.rank, a.world, a.port_file)
    dist.init_process_group("gloo", store=dist.PrefixStore("bench", store), rank=a.rank, world_size=a.world, timeout=TIMEOUT)

    blocks, base = NETS[a.net]
    model = FaceResNet(a.image_size, blocks, base).train()
    caps = facekit_rebuild_caps(model) if a.buckets == "facekit" else None
    ddp = nn.parallel.DistributedDataParallel(model, broadcast_buffers=False, bucket_cap_mb_list=caps)
    params = [p for p in model.parameters() if p.requires_grad]
    n_params = sum(p.numel() for p in params)
    x = torch.randn(a.batch, 3, a.image_size, a.image_size)
    target = torch.randn(a.batch, 512)

    def step(sync, zero=True):
        t = time.perf_counter()
        emb = ddp(x) if sync else model(x)
        F.mse_loss(emb, target).backward()
        if zero:
            for p in params:
                if p.grad is not None:
                    p.grad.detach_()
                    p.grad.zero_()
        return (time.perf_counter() - t) * 1e3

    for _ in range(a.warmup):
        step(True)
    local, synced = [], []
    for _ in range(a.rounds):
        for sync, out in ((False, local), (True, synced)):
            dist.barrier()
            ms = torch.tensor([step(sync) for _ in range(a.steps)], dtype=torch.float64)
            dist.all_reduce(ms, dist.ReduceOp.MAX)
            out.extend(ms.tolist())

    # A figure from a DDP that did not reduce would be meaningless: local gradients must differ
    # across the ranks (different batches), reduced ones must not.
    step(False, zero=False)
    if spread(params) == 0.0:
        raise SystemExit("local gradients are already equal across ranks: the check below proves nothing")
    for p in params:
        p.grad.zero_()
    step(True, zero=False)
    s = spread(params)
    if s != 0.0:
        raise SystemExit(f"gradients differ across ranks after a DDP step (largest spread of a |grad| sum: {s})")

    if a.rank == 0:
        ml, md = statistics.median(local), statistics.median(synced)
        info = ddp._get_ddp_logging_data()
        print(json.dumps({
            "impl": "pytorch" if a.buckets == "ddp" else "pytorch-facekit-buckets", "torch": torch.__version__, "net": a.net, "world": a.world, "batch": a.batch,
            "image_size": a.image_size, "threads": a.threads, "params": n_params,
            "grad_mb": round(n_params * 4 / 1e6, 2), "steps_per_mode": len(local),
            "ms_local": round(ml, 3), "ms_ddp": round(md, 3), "overhead_ms": round(md - ml, 3),
            "bucket_cap_mb_list": caps, "rebuilt_bucket_sizes": info.get("rebuilt_bucket_sizes"),
            "ms_local_all": [round(v, 3) for v in local], "ms_ddp_all": [round(v, 3) for v in synced],
        }))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
