"""The project's configs by name, as Detectron2's ``model_zoo.get_config``: no caller needs to know
where the repository root is."""

from __future__ import annotations

import difflib
from pathlib import Path

__all__ = ["CONFIGS", "get_config", "get_config_file"]

# The configs ship with the repository (an editable install, `pip install -e .`, finds them here).
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def get_config_file(name: str) -> str:
    """The path of config ``name`` ("pretrain_box_faster_rcnn_cpu.py"; ".py" may be left out).

    Raises:
        FileNotFoundError: no such config; the message names the nearest ones.
    """
    file = name if name.endswith(".py") else f"{name}.py"
    path = CONFIGS / file
    if not path.is_file():
        known = sorted(p.name for p in CONFIGS.glob("*.py"))
        near = difflib.get_close_matches(file, known, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(near)}?" if near else f"; known: {known}"
        raise FileNotFoundError(f"{name}: no such config in {CONFIGS}{hint}")
    return str(path)


def get_config(name: str):
    """The LazyConfig of config ``name`` (see :func:`get_config_file`), ready for overrides and
    ``instantiate``."""
    from detectron2.config import LazyConfig

    return LazyConfig.load(get_config_file(name))
