#!/usr/bin/env bash
# Prepares .gpu_check/ for scripts/gpu_check.sh, on a machine with the package registry and the set-up
# done (.venv): the GPU machine it travels to has Python 3.12 with torch and torchvision but neither
# Detectron2 nor a network.
#
#   bash scripts/gpu_check_prepare.sh [COCO256_DIR]    # default ../shared/data/coco256
#
# Writes (about 30 MB, ignored by git):
#   .gpu_check/wheels/     Detectron2's code (the hash-pinned registry wheel) and the pure-Python or
#                          cp312 wheels of its dependencies that such an image lacks;
#   .gpu_check/coco256/    the 128 coco256 train images, their annotations, their selective-search
#                          proposals and those proposals' 256 clusters for DETR (made here: the GPU
#                          image has no OpenCV contrib and no scikit-learn).
# A second run reuses what is there.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
COCO="$(cd "${1:-$ROOT/../shared/data/coco256}" && pwd)"
OUT="$ROOT/.gpu_check"
VPY="${ALIGNDET_VENV:-$ROOT/.venv}/bin/python"
[ -x "$VPY" ] || { echo "[gpu_check_prepare] run bash scripts/setup_env.sh first" >&2; exit 1; }
mkdir -p "$OUT/wheels" "$OUT/coco256/images" "$OUT/coco256/annotations"
# pip writes temporary files in the working directory: keep them out of the repository.
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
cd "$TMP"

PIP=("$VPY" -m pip --disable-pip-version-check --quiet)
# The versions the set-up installs here (requirements/detectron2.txt), for CPython 3.12.
CP312=(--no-deps --only-binary=:all: --python-version 3.12 --implementation cp
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64)
echo "[gpu_check_prepare] wheels"
"${PIP[@]}" download "${CP312[@]}" -d "$OUT/wheels" pycocotools==2.0.11 iopath==0.1.9 \
  omegaconf==2.3.1 hydra-core==1.3.8 yacs==0.1.8 termcolor==3.3.0
# fvcore and antlr4 are published as source only; both are pure Python.
"${PIP[@]}" wheel --no-deps -w "$OUT/wheels" fvcore==0.1.5.post20221221 antlr4-python3-runtime==4.9.3
# Detectron2's code: the cp310 wheel the set-up unpacks (gpu_check.sh installs its Python files only).
"${PIP[@]}" download --no-deps --only-binary=:all: --python-version 3.10 -d "$OUT/wheels" \
  --require-hashes -r "$ROOT/requirements/detectron2-code.txt"

echo "[gpu_check_prepare] coco256 train images and proposals"
cp -n "$COCO/annotations/train.json" "$OUT/coco256/annotations/train.json"
"$VPY" - "$COCO" "$OUT/coco256" <<'EOF'
import json, shutil, sys
from pathlib import Path

src, dst = Path(sys.argv[1]), Path(sys.argv[2])
for im in json.loads((src / "annotations" / "train.json").read_text())["images"]:
    if not (dst / "images" / im["file_name"]).exists():
        shutil.copy2(src / "images" / im["file_name"], dst / "images" / im["file_name"])
EOF
cd "$ROOT"
"$VPY" tools/proposals.py generate --image-root "$OUT/coco256/images" \
  --coco-json "$OUT/coco256/annotations/train.json" \
  --output "$OUT/coco256/annotations/train_proposals.json" --no-progress
# DETR pre-trains on cluster pseudo-labels. Clustered here on the CPU with the paper config's R-50 at
# random weights (no download): the check measures steps, not what the clusters mean.
if [ ! -f "$OUT/coco256/annotations/train_proposals_k256.json" ]; then
  echo "[gpu_check_prepare] DETR cluster pseudo-labels"
  "$VPY" tools/cluster_proposals.py --json "$OUT/coco256/annotations/train_proposals.json" \
    --image-root "$OUT/coco256/images" --config-file configs/pretrain_box_detr.py \
    --output "$OUT/coco256/annotations/train_proposals_k256.json" \
    --cache-dir "$TMP/features" --device cpu train.init_checkpoint=""
fi
du -sh "$OUT"
echo "[gpu_check_prepare] done: run bash scripts/gpu_check.sh on the GPU machine (with .gpu_check)"
