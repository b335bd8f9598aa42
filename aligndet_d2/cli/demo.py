"""The end-to-end demo on the bundled default data (datasets/coco64).

Stages: selective-search proposals for the train images -> validation -> pictures of the proposals and
of the two pre-training views.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import List, Optional

from . import proposals as proposals_cli
from . import visualize_views

__all__ = ["main"]

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO / "datasets" / "coco64"


def _stage(n: int, total: int, text: str) -> None:
    print(f"\n[demo {n}/{total}] {text}", flush=True)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="demo.py", description=__doc__.splitlines()[0])
    p.add_argument(
        "--data", default=str(DEFAULT_DATA), help="dataset folder (images/, annotations/)"
    )
    p.add_argument("--output-dir", default="output/demo", help="where everything is written")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="processes")
    args = p.parse_args(argv)

    t0 = time.time()
    images = os.path.join(args.data, "images")
    train_json = os.path.join(args.data, "annotations", "train.json")
    out = Path(args.output_dir)
    props = str(out / "proposals" / "train.json")
    total = 3

    _stage(1, total, f"selective-search proposals for {train_json} ({args.workers} processes)")
    rc = proposals_cli.main(
        [
            "generate",
            "--image-root",
            images,
            "--coco-json",
            train_json,
            "--output",
            props,
            "--workers",
            str(args.workers),
            "--check",
        ]
    )
    if rc:
        return rc
    _stage(2, total, "pictures of the proposals")
    rc = proposals_cli.main(
        [
            "draw",
            "--proposals",
            props,
            "--image-root",
            images,
            "--output-dir",
            str(out / "pictures"),
            "--num-images",
            "4",
        ]
    )
    if rc:
        return rc
    _stage(3, total, "pictures of the two pre-training views (matching ids, matching colours)")
    rc = visualize_views.main(
        [
            "--proposals",
            props,
            "--image-root",
            images,
            "--output-dir",
            str(out / "pictures"),
            "--num-images",
            "4",
            "--short-edge",
            "320",
            "352",
            "384",
            "--max-size",
            "640",
        ]
    )
    if rc:
        return rc
    print(f"\n[demo] done in {time.time() - t0:.0f} s; results in {out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
