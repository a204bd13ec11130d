#!/usr/bin/env python3
"""An independent NumPy implementation of the IJB-B / IJB-C protocol as insightface runs it
(recognition/arcface_torch/eval_ijbc.py for 1:1, recognition/_evaluation_/ijb/ijb_1n.py for 1:N),
the reference of `facekit eval ijb` (tests/cli/ijb.rs, scripts/bench-ijb.sh).

Subcommands:

  protocol ROOT TARGET OUT
      Reads facekit's per-face raw features (OUT/features.npy, the faces without one listed in
      OUT/features.json) and the meta files of ROOT, and prints as JSON: the pair scores, TAR at
      FAR by insightface's rule (scikit-learn's roc_curve, the point whose FPR is nearest each
      target), and the 1:N figures (insightface's closed set over both galleries; NIST's open set
      per gallery). Needs numpy and scikit-learn.

  chips ROOT TARGET SIZE OUT.npy INDEX... | all
      insightface's preprocessing of the faces at those line indices of the landmarks file (or of
      every face):
      cv2.imread, skimage SimilarityTransform of the five points onto the ArcFace template (scaled
      to SIZE), cv2.warpAffine (black border), BGR -> RGB. Writes uint8 [N, SIZE, SIZE, 3]. Needs
      cv2 and scikit-image.

  embed MODEL.torchscript.pt CHIPS.npy OUT.npy [BATCH]
      Raw flip-summed features of the chips by a TorchScript network: net(x) + net(mirror(x)),
      x = (chip / 255 - 0.5) / 0.5, NCHW. Needs torch.

$THREADS, when set, is the number of threads OpenCV and torch may use (scripts/bench-ijb.sh).
Each subcommand prints its own seconds on stderr (imports and start excluded).
"""
import json
import math
import os
import sys

import numpy as np

ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)


def meta_path(root, target, suffix):
    return os.path.join(root, "meta", "%s_%s" % (target.lower(), suffix))


def read_faces(root, target):
    """Landmark lines and template lines, paired by line index (blank lines skipped)."""
    with open(meta_path(root, target, "name_5pts_score.txt")) as f:
        lm = [l.split() for l in f if l.strip()]
    with open(meta_path(root, target, "face_tid_mid.txt")) as f:
        tm = [l.split() for l in f if l.strip()]
    assert len(lm) == len(tm)
    faces = []
    for l, t in zip(lm, tm):
        face = {"name": l[0], "points": None, "score": 0.0, "tid": None, "mid": None}
        try:
            assert len(l) == 12
            face["points"] = np.array([float(x) for x in l[1:11]], dtype=np.float32).reshape(5, 2)
            face["score"] = float(l[11])
        except (AssertionError, ValueError):
            face["points"] = None
        try:
            assert len(t) == 3
            face["tid"], face["mid"] = int(t[1]), int(t[2])
        except (AssertionError, ValueError):
            pass
        faces.append(face)
    return faces


def template_features(faces, feats, have):
    """Faces weighted by detector score, averaged per media, media summed, L2-normalised."""
    weighted = feats.astype(np.float32) * np.array([f["score"] for f in faces], dtype=np.float32)[:, None]
    tids = np.array([f["tid"] if f["tid"] is not None else -1 for f in faces])
    mids = np.array([f["mid"] if f["mid"] is not None else -1 for f in faces])
    out = {}
    for t in np.unique(tids[tids >= 0]):
        sel = (tids == t) & have
        total = np.zeros(feats.shape[1], dtype=np.float64)
        for m in np.unique(mids[sel]):
            total += weighted[sel & (mids == m)].astype(np.float64).mean(axis=0)
        n = np.sqrt((total**2).sum())
        out[int(t)] = total / n if n > 0 else total
    return out


def read_pairs(root, target):
    pairs = []
    with open(meta_path(root, target, "template_pair_label.txt")) as f:
        for line in f:
            p = line.split()
            if len(p) == 3 and p[2] in ("0", "1"):
                try:
                    pairs.append((int(p[0]), int(p[1]), int(p[2])))
                except ValueError:
                    pass
    return pairs


def read_csv(path):
    seen, out = set(), []
    with open(path) as f:
        next(f)
        for line in f:
            cols = line.strip().split(",")
            try:
                t, s = int(cols[0]), int(cols[1])
            except (ValueError, IndexError):
                continue
            if t not in seen:
                seen.add(t)
                out.append((t, s))
    return out


def tar_at_far_insightface(labels, scores):
    from sklearn.metrics import roc_curve

    fpr, tpr, thr = roc_curve(labels, scores)
    out = []
    for target in [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1]:
        i = int(np.argmin(np.abs(fpr - target)))
        out.append({"far_target": target, "tar": float(tpr[i]), "far": float(fpr[i])})
    return out


def one_to_n(feat_of, galleries, probes, dim):
    zero = np.zeros(dim)
    f = lambda t: feat_of.get(t, zero)
    # insightface: both galleries together, every probe's subject has exactly one mate there.
    gallery = [g for _, gl in galleries for g in gl]
    gsub = {s: i for i, (_, s) in enumerate(gallery)}
    kept = [(t, s) for t, s in probes if s in gsub]
    G = np.stack([f(t) for t, _ in gallery])
    P = np.stack([f(t) for t, _ in kept])
    sim = P @ G.T
    mate = np.array([gsub[s] for _, s in kept])
    pos = sim[np.arange(len(kept)), mate]
    ranks = 1 + (sim > pos[:, None]).sum(axis=1)
    neg_mask = np.ones_like(sim, dtype=bool)
    neg_mask[np.arange(len(kept)), mate] = False
    neg = np.sort(sim[neg_mask])[::-1]
    closed = {
        "probes": len(kept),
        "probes_without_mate": len(probes) - len(kept),
        "gallery_templates": len(gallery),
        "top1": float((ranks <= 1).mean()),
        "top5": float((ranks <= 5).mean()),
        "top10": float((ranks <= 10).mean()),
        "tpir_at_far": [],
    }
    for far in [0.01, 0.1]:
        k = math.ceil(len(kept) * far)
        th = neg[k - 1]
        closed["tpir_at_far"].append({"target": far, "tpir": float((pos > th).sum() / len(kept)), "threshold": float(th)})
    open_sets = []
    for name, gl in galleries:
        G = np.stack([f(t) for t, _ in gl])
        sub = {s: i for i, (_, s) in enumerate(gl)}
        sim = np.stack([f(t) for t, _ in probes]) @ G.T
        mated, non_mated = [], []
        for i, (_, s) in enumerate(probes):
            if s in sub:
                m = sub[s]
                r = 1 + int((sim[i] > sim[i, m]).sum())
                mated.append((r, sim[i, m]))
            else:
                non_mated.append(sim[i].max())
        non_mated = np.sort(np.array(non_mated))[::-1]
        entry = {
            "gallery": name,
            "mated": len(mated),
            "non_mated": len(non_mated),
            "rank1": sum(r == 1 for r, _ in mated) / len(mated),
            "rank5": sum(r <= 5 for r, _ in mated) / len(mated),
            "tpir_at_fpir": [],
        }
        for fpir in [1e-2, 1e-1]:
            # The largest set of non-mated top scores above a threshold holding at most fpir of them.
            k = int(math.floor(fpir * len(non_mated) + 1e-9))
            th = non_mated[k] if k < len(non_mated) else -np.inf
            entry["tpir_at_fpir"].append({
                "target": fpir,
                "tpir": sum(r == 1 and s > th for r, s in mated) / len(mated),
                "threshold": float(th),
                "fpir": float((non_mated > th).sum() / len(non_mated)),
            })
        open_sets.append(entry)
    return {"insightface": closed, "open_set": open_sets}


def protocol(root, target, out):
    faces = read_faces(root, target)
    feats = np.load(os.path.join(out, "features.npy"))
    failed = {f["index"] for f in json.load(open(os.path.join(out, "features.json")))["failed"]}
    have = np.array([i not in failed for i in range(len(faces))])
    tf = template_features(faces, feats, have)
    pairs = read_pairs(root, target)
    scores = [float(tf[a] @ tf[b]) if a in tf and b in tf else None for a, b, _ in pairs]
    kept = [(s, l) for s, (_, _, l) in zip(scores, pairs) if s is not None]
    result = {
        "scores": scores,
        "tar_at_far": tar_at_far_insightface(np.array([l for _, l in kept]), np.array([s for s, _ in kept])),
        "faces_without_feature": len(failed),
    }
    gnames = ["S1", "S2"] if target.upper() == "IJBB" else ["G1", "G2"]
    files = [meta_path(root, target, "1N_gallery_%s.csv" % g) for g in gnames] + [meta_path(root, target, "1N_probe_mixed.csv")]
    if all(os.path.isfile(p) for p in files):
        galleries = [(g, read_csv(p)) for g, p in zip(gnames, files)]
        result["identification"] = one_to_n(tf, galleries, read_csv(files[2]), feats.shape[1])
    json.dump(result, sys.stdout)


def chips(root, target, size, out, indices):
    import cv2
    from skimage import transform as trans

    if os.environ.get("THREADS"):
        cv2.setNumThreads(int(os.environ["THREADS"]))
    faces = read_faces(root, target)
    if indices == ["all"]:
        indices = [i for i, f in enumerate(faces) if f["points"] is not None]
    indices = [int(i) for i in indices]
    dst = ARCFACE_112 * (size / 112.0)
    res = []
    for i in indices:
        face = faces[i]
        img = cv2.imread(os.path.join(root, "loose_crop", face["name"]))
        tform = trans.SimilarityTransform()
        tform.estimate(face["points"], dst)
        warped = cv2.warpAffine(img, tform.params[0:2, :], (size, size), borderValue=0.0)
        res.append(cv2.cvtColor(warped, cv2.COLOR_BGR2RGB))
    np.save(out, np.stack(res).astype(np.uint8))


def embed(model, chips_npy, out, batch=64):
    import torch

    if os.environ.get("THREADS"):
        torch.set_num_threads(int(os.environ["THREADS"]))
    net = torch.jit.load(model).eval()
    x = np.load(chips_npy)
    feats = []
    with torch.no_grad():
        for s in range(0, len(x), batch):
            b = torch.from_numpy(((x[s : s + batch].astype(np.float32) / 255.0 - 0.5) / 0.5).transpose(0, 3, 1, 2).copy())
            feats.append((net(b) + net(torch.flip(b, [3]))).numpy())
    np.save(out, np.concatenate(feats).astype(np.float32))


def main():
    import time

    cmd, args = sys.argv[1], sys.argv[2:]
    # The libraries are imported before the clock starts (later imports in the functions are free).
    if cmd == "chips":
        import cv2  # noqa: F401
        import skimage.transform  # noqa: F401
    elif cmd == "embed":
        import torch  # noqa: F401
    elif cmd == "protocol":
        import sklearn.metrics  # noqa: F401
    started = time.perf_counter()
    if cmd == "protocol":
        protocol(*args)
    elif cmd == "chips":
        chips(args[0], args[1], int(args[2]), args[3], args[4:])
    elif cmd == "embed":
        embed(args[0], args[1], args[2], *(int(b) for b in args[3:]))
    else:
        sys.exit("unknown subcommand %s" % cmd)
    sys.stderr.write("%s seconds: %.3f\n" % (cmd, time.perf_counter() - started))


if __name__ == "__main__":
    main()
