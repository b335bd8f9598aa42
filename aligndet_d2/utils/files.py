"""Small file helpers shared by the tools and the benchmarks."""

from __future__ import annotations

import hashlib
import os
from typing import Union

__all__ = ["file_sha256"]


def file_sha256(path: Union[str, os.PathLike]) -> str:
    """The sha256 hex digest of a file's bytes, read in 1 MiB chunks (checkpoints are large)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
