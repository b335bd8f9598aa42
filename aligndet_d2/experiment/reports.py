"""Writing a benchmark's report: ``<out>.json``, ``<out>.md`` and a plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Dict, Optional

from .runner import REPO

__all__ = ["RESULTS", "REPORT_ONLY_HELP", "errorbar", "rewrite_report", "write_report"]

RESULTS = REPO / "benchmarks" / "results"  # the committed reports
REPORT_ONLY_HELP = "run and time nothing: write <out>.md (and .png) again from <out>.json"


def errorbar(ax, pts, **kwargs) -> None:
    """Plots ``[(x, {"mean", "min", "max"}), ...]`` as mean with min-max bars."""
    ax.errorbar(
        [x for x, _ in pts],
        [m["mean"] for _, m in pts],
        yerr=[[m["mean"] - m["min"] for _, m in pts], [m["max"] - m["mean"] for _, m in pts]],
        marker="o",
        capsize=3,
        **kwargs,
    )


def write_report(
    report: Dict,
    out: Path,
    markdown: Callable[[Dict], str],
    plot: Optional[Callable[[Dict, str], None]] = None,
) -> None:
    """Writes ``<out>.json``, ``<out>.md`` (and ``<out>.png`` with ``plot``); prints the
    markdown."""
    out.parent.mkdir(parents=True, exist_ok=True)
    # Not Path.with_suffix: a report name may contain dots ("report_lr0.01").
    Path(f"{out}.json").write_text(json.dumps(report, indent=1))
    text = markdown(report)
    Path(f"{out}.md").write_text(text)
    if plot is not None:
        plot(report, f"{out}.png")
    print(text)


def rewrite_report(
    out: Path,
    markdown: Callable[[Dict], str],
    plot: Optional[Callable[[Dict, str], None]] = None,
) -> None:
    """A benchmark's ``--report-only``: ``<out>.md`` (and ``<out>.png`` with ``plot``) written
    again from ``<out>.json``, which is read and left as it is; prints the markdown.

    Raises:
        SystemExit: ``<out>.json`` does not exist (the benchmark has not run).
    """
    src = Path(f"{out}.json")
    if not src.is_file():
        raise SystemExit(f"{src} does not exist: run the benchmark without --report-only first")
    report = json.loads(src.read_text())
    text = markdown(report)
    Path(f"{out}.md").write_text(text)
    if plot is not None:
        plot(report, f"{out}.png")
    print(text)
