#!/usr/bin/env python3
"""Independent reference figures for facekit's verification metrics (used by eval/tests/integration/metrics.rs).

Reads IN_DIR/pairs.npy (float32 [2P, D], pair k = rows 2k, 2k+1), IN_DIR/input.json
({"issame": [...], "folds": k, "scores": [...], "genuine": [...], "far_targets": [...],
"labels": [...]} with labels for IN_DIR/gallery.npy) and prints a JSON of:
- insightface's k-fold accuracy, re-implemented in numpy after
  recognition/arcface_torch/eval/verification.py (calculate_roc / calculate_accuracy);
- sklearn.metrics.roc_curve points (drop_intermediate True and False) and TAR at FAR;
- all-pairs cosine verification of the gallery, brute force.
"""
import json
import sys

import numpy as np
from sklearn.metrics import roc_curve
from sklearn.model_selection import KFold
from sklearn.preprocessing import normalize


def accuracy(threshold, dist, issame):
    predict = np.less(dist, threshold)
    tp = np.sum(np.logical_and(predict, issame))
    fp = np.sum(np.logical_and(predict, np.logical_not(issame)))
    tn = np.sum(np.logical_and(np.logical_not(predict), np.logical_not(issame)))
    fn = np.sum(np.logical_and(np.logical_not(predict), issame))
    tpr = 0 if tp + fn == 0 else tp / (tp + fn)
    fpr = 0 if fp + tn == 0 else fp / (fp + tn)
    return tpr, fpr, (tp + tn) / dist.size


def kfold(emb, issame, folds):
    thresholds = np.arange(0, 4, 0.01)
    e1, e2 = emb[0::2], emb[1::2]
    dist = np.sum(np.square(e1 - e2), 1)
    accs, chosen = [], []
    tprs = np.zeros((folds, len(thresholds)))
    fprs = np.zeros((folds, len(thresholds)))
    for f, (train, test) in enumerate(KFold(n_splits=folds, shuffle=False).split(np.arange(len(issame)))):
        acc_train = np.array([accuracy(t, dist[train], issame[train])[2] for t in thresholds])
        best = int(np.argmax(acc_train))
        for i, t in enumerate(thresholds):
            tprs[f, i], fprs[f, i], _ = accuracy(t, dist[test], issame[test])
        accs.append(accuracy(thresholds[best], dist[test], issame[test])[2])
        chosen.append(float(thresholds[best]))
    return {
        "accuracy_mean": float(np.mean(accs)),
        "accuracy_std": float(np.std(accs)),
        "fold_accuracy": [float(a) for a in accs],
        "fold_threshold": chosen,
        "tpr": np.mean(tprs, 0).tolist(),
        "fpr": np.mean(fprs, 0).tolist(),
    }


def roc(scores, genuine, targets):
    out = {}
    for drop in (True, False):
        fpr, tpr, thr = roc_curve(genuine, scores, drop_intermediate=drop)
        out["drop" if drop else "full"] = [[float(a), float(b), float(c) if np.isfinite(c) else None] for a, b, c in zip(fpr, tpr, thr)]
    fpr, tpr, _ = roc_curve(genuine, scores, drop_intermediate=False)
    impostors = int(np.sum(~genuine))
    out["tar_at_far"] = [float(tpr[fpr <= t].max()) if impostors >= round(1 / t) else None for t in targets]
    return out


def all_pairs(gallery, labels, targets):
    g = normalize(gallery.astype(np.float64))
    sim = g @ g.T
    iu = np.triu_indices(len(labels), k=1)
    s = sim[iu]
    same = labels[iu[0]] == labels[iu[1]]
    r = roc(s, same, targets)
    return {"genuine": int(same.sum()), "impostor": int((~same).sum()), "tar_at_far": r["tar_at_far"],
            "roc_drop": r["drop"], "genuine_mean": float(s[same].mean()), "impostor_mean": float(s[~same].mean())}


def main():
    d = sys.argv[1]
    cfg = json.load(open(f"{d}/input.json"))
    emb = np.load(f"{d}/pairs.npy").astype(np.float64)
    issame = np.array(cfg["issame"], dtype=bool)
    out = {"kfold": kfold(emb, issame, cfg["folds"])}
    out["roc"] = roc(np.array(cfg["scores"], dtype=np.float64), np.array(cfg["genuine"], dtype=bool), cfg["far_targets"])
    out["all_pairs"] = all_pairs(np.load(f"{d}/gallery.npy"), np.array(cfg["labels"]), cfg["far_targets"])
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
