"""Reading what a finished (or interrupted) train_net.py run left: its time and its evaluations."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

__all__ = ["eval_points", "logged_seconds"]


def logged_seconds(run: Path) -> float:
    """Wall time of a train_net.py run, training and every evaluation, from the timestamps of
    Detectron2's log (summed over resumed segments), so that runs started by hand with the
    harness's arguments are timed too. (Its "Total training time" line comes before the final
    evaluation.)

    Neither the time the run was down nor work done twice is counted: a segment that another
    resumed from iteration K counts up to its log line of the last iteration before K (logged
    after that iteration's checkpoint and evaluation); the iterations after it, and an evaluation
    it was stopped in, are redone and counted in the next segment. This can leave out up to one
    log period (``train.log_period`` iterations) of work that was kept.
    """
    log = run / "log.txt"
    if not log.exists():
        return 0.0
    # Per train_net.py start: its timestamps, the iterations it logged and where it started.
    segments: List[Dict[str, Any]] = []
    for line in log.read_text().splitlines():
        m = re.match(r"\[(\d\d/\d\d \d\d:\d\d:\d\d)\]", line)
        if not m:
            continue
        # Leap year 2000, so that 02/29 parses; runs do not span a new year.
        t = datetime.strptime(f"2000/{m.group(1)}", "%Y/%m/%d %H:%M:%S")
        # Every train_net.py run logs this first (detectron2's default_setup).
        if "Rank of current process" in line or not segments:
            segments.append({"times": [], "iters": [], "start": None})
        seg = segments[-1]
        seg["times"].append(t)
        start = re.search(r"Starting training from iteration (\d+)", line)
        if start:
            seg["start"] = int(start.group(1))
        else:
            it = re.search(r"\biter: (\d+)\s", line)
            if it:
                seg["iters"].append((int(it.group(1)), t))
    total = 0.0
    for seg, nxt in zip(segments, segments[1:] + [None]):
        end = seg["times"][-1]
        resumed_at = nxt["start"] if nxt is not None else None
        if resumed_at is not None:
            kept = [t for i, t in seg["iters"] if i < resumed_at]
            end = kept[-1] if kept else seg["times"][0]
        total += (end - seg["times"][0]).total_seconds()
    return total


def eval_points(
    run: Path, max_iter: int, metrics: Sequence[Tuple[str, str]]
) -> Dict[int, Dict[str, float]]:
    """The evaluations a fine-tune wrote to metrics.json: {iterations done: {"task/metric": v}},
    those that hold every ``(task, metric)`` of ``metrics`` (plus AP by class frequency where the
    config evaluates it).

    Detectron2's EvalHook stores a periodic evaluation under the iteration just run (0-based) and
    the final one, run after training, under ``max_iter``.
    """
    out: Dict[int, Dict[str, float]] = {}
    path = run / "metrics.json"
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        vals = {
            f"{task}/{metric}": rec[f"{task}/{metric}"]
            for task, metric, *_ in metrics
            if f"{task}/{metric}" in rec
        }
        if len(vals) == len(metrics):
            # AP by class frequency in the labeled split, where the config evaluates it.
            vals.update({k: v for k, v in rec.items() if k.startswith("bbox_by_frequency/")})
            it = rec["iteration"]
            out[it if it >= max_iter else it + 1] = vals
    return out
