"""The manifest of finished runs: a committed json that a grid of runs fills over several
invocations, sessions and machines, and that two processes may fill at once."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Dict, Iterator, Mapping

__all__ = ["Manifest"]


class Manifest(Mapping[str, Dict]):
    """``{run key: row}`` read from ``path``; :meth:`record` adds a row and saves at once.

    Saving merges with what is on disk under a file lock, so that two processes filling different
    runs of one grid keep each other's rows (only the keys this process recorded override the
    file), and writes the whole file to a temporary name and renames it, so that an interrupted
    write loses nothing.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._rows = self._read()
        self._mine: set = set()

    def _read(self) -> Dict[str, Dict]:
        if not self.path.exists():
            return {}
        try:
            return json.loads(self.path.read_text())
        except json.JSONDecodeError as e:
            raise SystemExit(f"{self.path}: not a json manifest ({e})")

    def __getitem__(self, key: str) -> Dict:
        return self._rows[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def record(self, key: str, row: Mapping) -> None:
        """Adds (or replaces) the row of ``key`` and saves the manifest."""
        self._rows[key] = dict(row)
        self._mine.add(key)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = self.path.with_name(self.path.name + ".lock")
        with open(lock, "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            mine = {k: self._rows[k] for k in self._mine}
            self._rows = {**self._read(), **mine}
            tmp = self.path.with_name(f"{self.path.name}.tmp{os.getpid()}")
            tmp.write_text(json.dumps(self._rows, indent=1, sort_keys=True) + "\n")
            os.replace(tmp, self.path)
