"""MXNet's own RecordIO, as the reference client of facekit's import and export.

Runs in the mxnet venv (.venv-mxnet: mxnet==1.9.1, numpy<1.24), through `mxnet.recordio`, the
module arcface_torch reads .rec files with.

  write --layout insightface|im2rec --list LIST.tsv --out DIR   (LIST: path<TAB>label per line)
      insightface: images at keys 1..N with IRHeader(0, label, key, 0), one identity record per
      label holding its key range [first, end), then record 0 holding the identity records'
      range (as insightface's rec_builder.py); and `property`. im2rec: images at keys 0..N-1, no header record.
  read --dir DIR --out RESULT.json
      every record of DIR/train.idx: key, flag, label(s), id, id2, image length and SHA-256
  bench --dir DIR [--decode]
      read every record with read_idx + unpack (what arcface_torch's loader does per sample), and
      with --decode also mx.image.imdecode (a full decode, as facekit's import checks); prints
      records/s and MB/s as JSON
"""
import argparse, hashlib, json, os, sys, time

import mxnet as mx
from mxnet import recordio


def write(args):
    items = []
    with open(args.list) as f:
        for line in f:
            path, label = line.rstrip("\n").split("\t")
            items.append((path, int(label)))
    os.makedirs(args.out, exist_ok=True)
    rec = recordio.MXIndexedRecordIO(os.path.join(args.out, "train.idx"), os.path.join(args.out, "train.rec"), "w")
    if args.layout == "im2rec":
        for key, (path, label) in enumerate(items):
            rec.write_idx(key, recordio.pack(recordio.IRHeader(0, float(label), key, 0), open(path, "rb").read()))
    else:
        items.sort(key=lambda it: it[1])
        ranges, key = {}, 1
        for path, label in items:
            rec.write_idx(key, recordio.pack(recordio.IRHeader(0, float(label), key, 0), open(path, "rb").read()))
            first, _ = ranges.get(label, (key, key))
            ranges[label] = (first, key + 1)
            key += 1
        classes = max(ranges) + 1
        first_identity = key
        cursor = 1
        for label in range(classes):
            # An unused label gets an empty range where its images would be.
            first, end = ranges.get(label, (cursor, cursor))
            cursor = end
            rec.write_idx(first_identity + label, recordio.pack(recordio.IRHeader(0, [float(first), float(end)], first_identity + label, 0), b""))
        # id2 = 1, as insightface's rec_builder writes record 0.
        rec.write_idx(0, recordio.pack(recordio.IRHeader(0, [float(first_identity), float(first_identity + classes)], 0, 1), b""))
        with open(os.path.join(args.out, "property"), "w") as f:
            f.write("%d,%d,%d\n" % (classes, args.size, args.size))
    rec.close()


def read(args):
    rec = recordio.MXIndexedRecordIO(os.path.join(args.dir, "train.idx"), os.path.join(args.dir, "train.rec"), "r")
    out = []
    for key in sorted(rec.keys):
        header, img = recordio.unpack(rec.read_idx(key))
        label = header.label
        label = [float(x) for x in label] if hasattr(label, "__len__") else [float(label)]
        out.append({"key": int(key), "flag": int(header.flag), "label": label, "id": int(header.id), "id2": int(header.id2),
                    "len": len(img), "sha256": hashlib.sha256(img).hexdigest()})
    rec.close()
    json.dump(out, open(args.out, "w"))


def bench(args):
    rec = recordio.MXIndexedRecordIO(os.path.join(args.dir, "train.idx"), os.path.join(args.dir, "train.rec"), "r")
    keys = sorted(rec.keys)
    n, nbytes, t0 = 0, 0, time.perf_counter()
    for key in keys:
        header, img = recordio.unpack(rec.read_idx(key))
        if args.decode and img:
            mx.image.imdecode(img).wait_to_read()
        n += 1
        nbytes += len(img)
    dt = time.perf_counter() - t0
    print(json.dumps({"records": n, "seconds": dt, "records_per_s": n / dt, "mb_per_s": nbytes / dt / 1e6}))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write"); w.add_argument("--layout", choices=["insightface", "im2rec"], required=True)
    w.add_argument("--list", required=True); w.add_argument("--out", required=True); w.add_argument("--size", type=int, default=112)
    r = sub.add_parser("read"); r.add_argument("--dir", required=True); r.add_argument("--out", required=True)
    b = sub.add_parser("bench"); b.add_argument("--dir", required=True); b.add_argument("--decode", action="store_true")
    args = p.parse_args()
    {"write": write, "read": read, "bench": bench}[args.cmd](args)


if __name__ == "__main__":
    main()
