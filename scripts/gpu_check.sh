#!/usr/bin/env bash
# The prepared GPU check, for a GPU machine whose Python has torch and torchvision but no Detectron2
# and no network. Prepare .gpu_check/ first where the registry is reachable
# (bash scripts/gpu_check_prepare.sh), bring it along, then on the GPU machine:
#
#   bash scripts/gpu_check.sh [benchmarks/gpu_check.py options, e.g. --detectors faster_rcnn fcos]
#   bash scripts/gpu_check.sh --install-only    # install, print the folder, run nothing
#
# Installs Detectron2's code and the prepared wheels into a temporary folder (no network, nothing
# outside it is changed), then runs benchmarks/gpu_check.py: 30 iterations of the paper-setting
# pre-training (R-50-FPN, random init, coco256 at the paper's input sizes, AMP) and of the supervised
# step with the same frozen backbone; prints s/iter, their ratio, peak GPU memory and the aten operators
# and host syncs of one more step (aligndet_d2/utils/op_count.py).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WHEELS="${ALIGNDET_GPU_WHEELS:-$ROOT/.gpu_check/wheels}"
PY="${PYTHON:-python3}"
[ -d "$WHEELS" ] || { echo "[gpu_check] no $WHEELS: run scripts/gpu_check_prepare.sh first" >&2; exit 1; }
SITE="${ALIGNDET_GPU_SITE:-$(mktemp -d)}"

echo "[gpu_check] installing into $SITE"
# Everything but Detectron2's code installs as it is; no index is ever asked.
find "$WHEELS" -name '*.whl' ! -name 'sal_detectron2-*' -print0 \
  | xargs -0 "$PY" -m pip install --quiet --disable-pip-version-check --no-index --no-deps \
      --no-compile --target "$SITE"
# Detectron2's wheel is tagged for CPython 3.10 but its code is pure Python: unpack that code, as
# scripts/setup_env.sh does, without its cp310 binary (detectron2._C) and its stray `tools` package.
"$PY" - "$SITE" "$WHEELS"/sal_detectron2-*.whl <<'EOF'
import sys
import zipfile

site, wheel = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    z.extractall(site, [n for n in z.namelist() if n.startswith("detectron2/") and "/_C." not in n])
EOF
if [ "${1:-}" = "--install-only" ]; then
  echo "[gpu_check] installed: PYTHONPATH=$SITE:$ROOT"
  exit 0
fi
export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
cd "$ROOT"
"$PY" benchmarks/gpu_check.py "$@"
