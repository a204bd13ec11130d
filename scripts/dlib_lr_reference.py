#!/usr/bin/env python3
"""Reference values for facekit's learning-rate schedule tests (train/tests/integration/schedule_dlib_reference.rs).

Usage: dlib_lr_reference.py INPUT.json OUTPUT.json

INPUT holds {"sequences": [[float, ...], ...], "plateau": {"lr", "threshold", "shrink", "min_lr",
"dump_amount", "losses": [...]}}. OUTPUT receives:
- "plain" / "robust": dlib's OWN count_steps_without_decrease and
  count_steps_without_decrease_robust (the `dlib` Python package, defaults 0.51 and 0.10) for
  every sequence;
- "plateau": one {"lr", "shrunk", "stop", "history_len"} per observed loss, from a Python PORT of
  dnn_trainer's shrink rule (dlib/dnn/trainer.h: record_loss, the gradient_check_budget check in
  thread(), drop_some_previous_loss_values). The rule itself is not exposed by dlib's Python
  bindings, so this part is a re-implementation; its counters are dlib's own.
"""
import json
import sys
from collections import deque

import dlib


def plateau_trace(p):
    lr = p["lr"]
    thresh = p["threshold"]
    shrink = p["shrink"]
    min_lr = p["min_lr"]
    dump = p["dump_amount"]
    history = deque()
    budget = 0
    trace = []
    for loss in p["losses"]:
        # record_loss()
        budget += 200
        history.append(loss)
        while len(history) > thresh:
            history.popleft()
        # thread(): check only when the budget allows it
        shrunk = False
        if budget > thresh and shrink != 1:
            budget = 0
            values = list(history)
            if dlib.count_steps_without_decrease(values) >= thresh:
                if dlib.count_steps_without_decrease_robust(values) >= thresh:
                    lr = shrink * lr
                    shrunk = True
                    # drop_some_previous_loss_values()
                    for _ in range(dump + thresh // 10):
                        if not history:
                            break
                        history.popleft()
        trace.append({"lr": lr, "shrunk": shrunk, "stop": lr < min_lr, "history_len": len(history)})
    return trace


def main():
    src, dst = sys.argv[1], sys.argv[2]
    with open(src) as f:
        inp = json.load(f)
    out = {
        "plain": [int(dlib.count_steps_without_decrease(s)) for s in inp["sequences"]],
        "robust": [int(dlib.count_steps_without_decrease_robust(s)) for s in inp["sequences"]],
        "plateau": plateau_trace(inp["plateau"]),
    }
    with open(dst, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
