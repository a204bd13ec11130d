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

# npy
b = io.BytesIO()
np.save(b, np.arange(12, dtype="<f4").reshape(3, 4))
put("npy", "m.npy", b.getvalue())
print(f"seeds written to {SEEDS}")
