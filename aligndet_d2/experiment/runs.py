"""Run naming and provenance: the overrides that reach a run, the directory name they give it, the
code a run was made with."""

from __future__ import annotations

import subprocess
from typing import Any, Dict, List

from .detectors import DETECTORS
from .runner import REPO

__all__ = ["code_version", "opts_for", "opts_tag"]


def opts_for(det: str, items: List[str], flag: str) -> List[str]:
    """The ``key=value`` overrides of ``items`` that apply to ``det``: unprefixed ones apply to
    every detector, ``DETECTOR:key=value`` to that detector only (the prefix is stripped, so a run's
    directory name does not depend on how its overrides were spelled)."""
    out = []
    for item in items:
        key, eq, _ = item.partition("=")
        prefix, colon, _ = key.partition(":")
        if not eq:
            raise SystemExit(f"{flag}: expected [DETECTOR:]key=value, got {item!r}")
        if not colon:
            out.append(item)
        elif prefix not in DETECTORS:
            raise SystemExit(f"{flag}: {prefix!r} in {item!r} is not one of {list(DETECTORS)}")
        elif prefix == det:
            out.append(item[len(prefix) + 1 :])
    return out


def opts_tag(opts: List[str]) -> str:
    """The part of a run directory's name that spells its overrides."""
    return "".join(f"_{x}" for x in opts).replace("=", "-").replace("model.", "")


def code_version() -> Dict[str, Any]:
    """The commit the harness runs, and whether the code (package, configs, tools, benchmark
    scripts; not the results and notes the harness writes) differs from it."""
    code = ["aligndet_d2", "configs", "tools", "train_net.py", "benchmarks/*.py"]

    def git(*cmd: str) -> str:
        return subprocess.run(
            ["git", *cmd], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no", "--", *code))
    except (OSError, subprocess.CalledProcessError):
        return {"commit": "unknown (not a git checkout)"}
    return {"commit": commit, "dirty": dirty}
