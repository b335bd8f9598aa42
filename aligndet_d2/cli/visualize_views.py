"""Command line: the two pre-training views of images side by side, ids in matching colours.

Example::

    python tools/visualize_views.py --proposals output/proposals/train.json \\
        --image-root datasets/coco64/images --output-dir output/views --num-images 2
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

import numpy as np

from ..data.datasets import load_proposals_json
from ..data.proposals import ProposalsError
from ..data.two_view_mapper import TwoViewMapper
from ..utils.visualize import draw_two_views, save_picture

__all__ = ["main"]


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(
        prog="visualize_views.py",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--proposals", required=True, help="proposals json")
    p.add_argument("--image-root", required=True, help="folder the json's file names are under")
    p.add_argument("--output-dir", required=True, help="where to write <image>_views.png")
    p.add_argument("--num-images", type=int, default=2, help="the first N images of the json")
    p.add_argument(
        "--short-edge",
        type=int,
        nargs="+",
        default=[640, 672, 704, 736, 768, 800],
        help="short-side lengths a view draws from",
    )
    p.add_argument("--max-size", type=int, default=1333, help="cap on a view's long side")
    p.add_argument("--max-proposals", type=int, default=30, help="first k proposals per image")
    p.add_argument("--seed", type=int, default=0, help="random seed of the augmentations")
    args = p.parse_args(argv)

    try:
        dicts = load_proposals_json(args.proposals, args.image_root)
    except ProposalsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    mapper = TwoViewMapper(
        short_edge_lengths=args.short_edge,
        max_size=args.max_size,
        max_proposals=args.max_proposals,
    )
    np.random.seed(args.seed)
    for d in dicts[: args.num_images]:
        pic = draw_two_views(mapper(d), mapper.image_format)
        print(f"wrote {save_picture(pic, args.output_dir, d['file_name'], 'views')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
