#!/usr/bin/env bash
# Sets up .venv if needed, then runs the end-to-end demo: the own-data recipe (tools/recipe.py) on
# the bundled data (datasets/coco64). Extra arguments go to tools/demo.py (see `--help`).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
exec "${ALIGNDET_VENV:-$ROOT/.venv}/bin/python" tools/demo.py "$@"
