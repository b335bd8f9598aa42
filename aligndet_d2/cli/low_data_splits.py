"""Command line: low-data splits of a COCO json (labeled subset per percent and seed, and the rest).

Example (VOC ``train``, 5 and 10 % labeled, folds 1-3)::

    python tools/low_data_splits.py --json ../shared/data/voc2007/annotations/train.json \\
        --percents 5 10 --seeds 1 2 3 --output-dir datasets/voc2007_splits
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from ..data.splits import SplitError, write_low_data_splits

__all__ = ["main"]


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(
        prog="low_data_splits.py",
        description="Writes <stem>.<seed>@<percent>.json (labeled) and "
        "<stem>.<seed>@<percent>-unlabeled.json (the rest) per percent and seed, as SoftTeacher / "
        "AlignDet name them. Labeled images are drawn from those with a box; a seed gives the same "
        "images on any machine.",
    )
    p.add_argument("--json", required=True, help="COCO instances json to split")
    p.add_argument("--percents", nargs="+", type=float, required=True, help="labeled shares, %%")
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3, 4, 5], help="folds")
    p.add_argument("--output-dir", required=True, help="folder for the split files")
    p.add_argument(
        "--independent",
        action="store_true",
        help="draw each percent's images independently; default: nested (for one seed, the 5 %% "
        "split contains the 1 %% split)",
    )
    args = p.parse_args(argv)
    try:
        rows = write_low_data_splits(
            args.json, args.output_dir, args.percents, args.seeds, nested=not args.independent
        )
    except SplitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for r in rows:
        print(
            f"{r['labeled_file']}: {r['labeled_images']} labeled images ({r['labeled_boxes']} "
            f"boxes), {r['unlabeled_images']} unlabeled, of them {r['images_without_boxes']} "
            "without boxes"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
