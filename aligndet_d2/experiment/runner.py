"""Runs ``train_net.py`` in a subprocess, as a user would, from the repository root."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence

__all__ = ["REPO", "run_train_net", "train_net_resumable"]

REPO = Path(__file__).resolve().parents[2]
# Lines of train_net.py's output worth echoing while it runs.
_PROGRESS = ("eta:", "Overall training speed", "copypaste:", "Error", "error:", "Traceback")
# Detectron2's metrics line: "eta: 0:01:02  iter: 19  total_loss: ...".
_ITER = re.compile(r"\biter: (\d+)")
# Errors worth showing when the progress bar hides the rest of the output.
_ERROR = ("Error", "error:")


def run_train_net(
    args: Sequence[str],
    log: Path,
    *,
    append: bool = False,
    echo: bool = False,
    name: str = "",
    progress: Optional[int] = None,
) -> float:
    """Runs ``train_net.py ARGS`` with its whole output in ``log``; returns the wall time (s).

    Args:
        args: train_net.py's arguments (``--config-file ...`` and ``key=value`` overrides).
        log: the file that receives stdout and stderr.
        append: append to ``log`` (a resumed run keeps the output of its earlier segments).
        echo: print the command and train_net.py's progress lines (ETA, AP) while it runs.
        name: the caller's name for the error message (``[demo] train_net.py failed ...``).
        progress: the run's ``train.max_iter``: show a progress bar with its ETA, moved by the
            iterations Detectron2 logs, and the last error line when it fails.

    Raises:
        SystemExit: train_net.py failed; the message names its exit status and the log.
    """
    cmd = [sys.executable, str(REPO / "train_net.py"), *args]
    if echo:
        print("  $ " + " ".join(cmd[1:]), flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    t = time.time()
    bar, last_error = None, ""
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=progress, desc="  iterations", unit="it", dynamic_ncols=True)
    with open(log, "a" if append else "w") as f:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO
        )
        for line in proc.stdout:
            f.write(line)
            if bar is not None:
                m = _ITER.search(line)
                if m:  # the 0-based iteration just run
                    bar.update(min(progress, int(m.group(1)) + 1) - bar.n)
                if any(p in line for p in _ERROR):
                    last_error = line.strip()
            if echo and any(p in line for p in _PROGRESS):
                start = line.find("eta:")
                print("  " + line[max(start, 0) :].rstrip()[:150], flush=True)
        code = proc.wait()
    if bar is not None:
        if not code:
            bar.update(progress - bar.n)
        bar.close()
    if code:
        prefix = f"[{name}] " if name else ""
        detail = f": {last_error[-300:]}" if last_error else ""
        raise SystemExit(f"{prefix}train_net.py failed (exit {code}){detail}; see {log}")
    return time.time() - t


def train_net_resumable(args: List[str], out_dir: Path) -> float:
    """A benchmark's run of ``train_net.py`` into ``out_dir``: resumed from its last checkpoint
    when interrupted before, only the last checkpoint kept, the output appended to
    ``out_dir/train_net.log``. Returns the wall time of this call in seconds."""
    out_dir.mkdir(parents=True, exist_ok=True)
    resume = ["--resume"] if (out_dir / "last_checkpoint").exists() else []
    return run_train_net(
        [*resume, *args, f"train.output_dir={out_dir}", "train.checkpointer.max_to_keep=1"],
        out_dir / "train_net.log",
        append=True,
    )
