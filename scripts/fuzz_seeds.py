"""Writes the fuzzers' seed inputs into fuzz/seeds/<target>/: small, valid examples of every input
format, so that coverage-guided fuzzing starts from files that get past the first checks.

Usage: .venv/bin/python scripts/fuzz_seeds.py FACEKIT_BINARY   (scripts/fuzz.sh runs it when the
seeds are missing). Photos come from ../shared/data; shards are packed by facekit itself.
"""
import io, json, os, pickle, shutil, struct, subprocess, sys, tempfile
import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.environ.get("FACEKIT_SHARED_DATA", os.path.join(ROOT, "..", "shared", "data"))
SEEDS = os.path.join(ROOT, "fuzz", "seeds")
facekit = sys.argv[1]


def put(target, name, data):
    d = os.path.join(SEEDS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


photo = Image.open(os.path.join(DATA, "lfw100", "Colin_Powell", "Colin_Powell_0002.jpg")).convert("RGB")
small = photo.resize((24, 24))

# image: every format the front door recognises, small.
for fmt, ext, img in [("JPEG", "jpg", small), ("PNG", "png", small), ("GIF", "gif", small.convert("P")),
                      ("BMP", "bmp", small), ("WEBP", "webp", small), ("TIFF", "tiff", small),
                      ("PPM", "ppm", small), ("PNG", "rgba.png", small.convert("RGBA")), ("JPEG", "grey.jpg", small.convert("L"))]:
    b = io.BytesIO()
    img.save(b, fmt)
    put("image", f"seed.{ext}", b.getvalue())
b = io.BytesIO()
exif = Image.Exif()
exif[0x0112] = 6
small.save(b, "JPEG", exif=exif.tobytes())
put("image", "exif6.jpg", b.getvalue())
b = io.BytesIO()
small.save(b, "JPEG", progressive=True)
put("image", "progressive.jpg", b.getvalue())

# shard, record, manifest: a pack of two photos in each record encoding.
with tempfile.TemporaryDirectory() as t:
    root = os.path.join(t, "r", "Colin_Powell")
    os.makedirs(root)
    for k in (1, 2):
        small.resize((64, 64)).save(os.path.join(root, f"{k}.jpg"), "JPEG")
    lm = os.path.join(t, "lm.txt")
    with open(lm, "w") as f:
        for k in (1, 2):
            f.write(f"Colin_Powell/{k}.jpg 24 28 40 28 32 36 26 46 38 46\n")
    for enc in ("jpeg", "png", "raw", "raw-zstd"):
        out = os.path.join(t, "o", enc)
        subprocess.run([facekit, "pack", os.path.join(t, "r"), "-o", out, "--landmarks", lm, "--size", "16",
                        "--encoding", enc, "--quiet"], check=True, stdout=subprocess.DEVNULL)
        shard = open(out + "-00000.shard", "rb").read()
        put("shard", f"{enc}.shard", shard)
        # The first record: 48-byte header, path, payload (lengths from the header).
        payload_len, = struct.unpack_from("<I", shard, 32 + 4)
        path_len, = struct.unpack_from("<H", shard, 32 + 22)
        put("record", f"{enc}.record", shard[32:32 + 48 + path_len + payload_len])
    put("manifest", "manifest.json", open(os.path.join(t, "o", "jpeg.manifest.json"), "rb").read())
    put("manifest", "labels.tsv", open(os.path.join(t, "o", "jpeg.labels.tsv"), "rb").read())
    # A progress file: a pack stopped after its first shard.
    env = dict(os.environ, FACEKIT_PACK_STOP_AFTER_SHARDS="1")
    subprocess.run([facekit, "pack", os.path.join(t, "r"), "-o", os.path.join(t, "p", "x"), "--landmarks", lm, "--size", "16",
                    "--shard-size", "1", "--quiet"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    put("manifest", "progress.json", open(os.path.join(t, "p", "x.progress.json"), "rb").read())
    put("tables", "landmarks.txt", open(lm).read() + "# comment\nb c/2.jpg\t7\t1\t2\t3\t4\t5\t6\t7\t8\t9\t10.5\n")
put("tables", "attributes.csv", "key,gender,age\nColin_Powell,m,65\nColin_Powell/1.jpg,male,64\nx/y.jpg,f,\n")

# pairs: both line forms, two folds.
put("pairs", "pairs.txt", "2 1\nA 1 2\nA 1 B 2\nC 3 4\nC 1 D 1\n")
put("pairs", "one_fold.txt", "1\nAbel_Pacheco 1 4\nAbel_Pacheco 1 Jong_Thae_Hwa 2\n")

# pickle: what insightface's .bin files hold, at the protocols Python 2 and 3 wrote.
b = io.BytesIO()
small.save(b, "JPEG")
jpg = b.getvalue()
for proto in (2, 4):
    put("pickle", f"bin_p{proto}.bin", pickle.dumps(([jpg, jpg, jpg, jpg], [True, False]), protocol=proto))
put("pickle", "numpy_bools.bin", pickle.dumps(([jpg, jpg], [np.bool_(True)]), protocol=2))
# issame as a numpy array, as insightface's own scripts write it: _reconstruct + BUILD at
# protocols 2-4, _frombuffer over a bytearray at 5; numpy 2 here (numpy._core), numpy 1 in
# MXNet's venv when there is one (numpy.core).
for proto in (2, 4, 5):
    put("pickle", f"numpy_array_p{proto}.bin", pickle.dumps(([jpg, jpg, jpg, jpg], np.array([True, False])), protocol=proto))
mx_python = os.path.join(ROOT, ".venv-mxnet", "bin", "python")
if os.path.exists(mx_python):
    for proto in (2, 5):
        code = ("import pickle, sys, numpy as np; sys.stdout.buffer.write(pickle.dumps(([b'a', b'b'], np.array([True])), protocol=%d))" % proto)
        put("pickle", f"numpy1_array_p{proto}.bin", subprocess.run([mx_python, "-c", code], check=True, stdout=subprocess.PIPE).stdout)

# rec_import: two little-endian bytes giving the .idx length, the .idx, the .rec. Records are
# framed as dmlc-core frames them (payloads here never hold the magic, so none is split).
MAGIC = 0xced7230a


def frame(payload, cflag=0):
    pad = b"\0" * (-len(payload) % 4)
    return struct.pack("<II", MAGIC, (cflag << 29) | len(payload)) + payload + pad


def ir(label, key, image=b"", labels=None, id2=0):
    if labels:
        return struct.pack("<IfQQ", len(labels), 0.0, key, id2) + struct.pack("<%df" % len(labels), *labels) + image
    return struct.pack("<IfQQ", 0, float(label), key, id2) + image


b = io.BytesIO()
small.resize((8, 8)).save(b, "PNG")
png = b.getvalue()


def rec_import_seed(name, records, extra_lines="", flags=None):
    rec, lines = b"", ""
    for key, payload in records:
        lines += "%d\t%d\n" % (key, len(rec))
        rec += frame(payload, (flags or {}).get(key, 0))
    idx = (lines + extra_lines).encode()
    put("rec_import", name, struct.pack("<H", len(idx)) + idx + rec)


# insightface's layout: record 0, images at keys 1..3, identities at 3..5; key 2 listed again,
# key 9 naming key 1's record.
rec_import_seed("insightface.bin", [(1, ir(0, 1, png)), (2, ir(1, 2, png)), (3, ir(0, 3, labels=[1, 2])), (4, ir(0, 4, labels=[2, 3])),
                                    (0, ir(0, 0, labels=[3, 5], id2=1))], "2\t%d\n9\t0\n" % len(frame(ir(0, 1, png))))
# im2rec's: images from key 0; key 1's part flag is 5.
rec_import_seed("im2rec_bad_flag.bin", [(0, ir(0, 0, png)), (1, ir(1, 1, png)), (2, ir(0, 2, png))], flags={1: 5})

# npy
b = io.BytesIO()
np.save(b, np.arange(12, dtype="<f4").reshape(3, 4))
put("npy", "m.npy", b.getvalue())
print(f"seeds written to {SEEDS}")
