"""Command line: your images and a few labels in, an AlignDet pre-trained detector out.

Examples::

    # a COCO json of the labeled images, a separate val json
    python tools/recipe.py --images my_data/images --train-json my_data/train.json \\
        --val-json my_data/val.json --output output/my_data --baseline
    # YOLO labels for some of the images; val held out of them
    python tools/recipe.py --images my_data/images --labels my_data/labels --label-format yolo \\
        --classes my_data/data.yaml --output output/my_data

Checks every image and box first, then: proposals of the pool (every image of --images except
the val images) -> AlignDet pre-training -> export -> the fine-tune lr chosen on held-out
labeled images -> fine-tuning (the backbone frozen with parallel adapters) -> evaluation on val
-> OUTPUT/report.md. Running it again continues where it stopped. See docs/GETTING_STARTED.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

from ..data.checks import DatasetError
from ..experiment.detectors import DETECTORS
from ..experiment.recipe import LR_FACTORS, RecipeSettings, run_recipe

__all__ = ["main"]


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(
        prog="recipe.py",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--images", required=True, help="folder of every image, labeled or not")
    g = p.add_argument_group("labels (a COCO json, or VOC / YOLO files to convert)")
    g.add_argument("--train-json", default="", help="COCO json of the labeled images")
    g.add_argument("--labels", default="", help="folder of VOC .xml or YOLO .txt files")
    g.add_argument("--label-format", default="", choices=["", "voc", "yolo"])
    g.add_argument("--classes", default="", help="class names: file, data.yaml or a,b,c")
    p.add_argument(
        "--val-json",
        default="",
        help="COCO json of the val images (default: 20%% of the labeled images held out)",
    )
    p.add_argument("--output", required=True, help="output folder (re-run to continue)")
    p.add_argument(
        "--detector",
        default="faster_rcnn",
        choices=list(DETECTORS),
        help="default: faster_rcnn, the README's best row (frozen backbone + parallel adapters)",
    )
    p.add_argument("--baseline", action="store_true", help="also fine-tune from scratch")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--pretrain-iters", type=int, default=0, help="default: 1 epoch of the pool")
    p.add_argument(
        "--finetune-iters", type=int, default=0, help="default: 12 epochs of the labeled images"
    )
    p.add_argument("--lr", type=float, default=0.0, help="the fine-tune lr (default: chosen)")
    p.add_argument(
        "--lr-factors",
        nargs="+",
        type=float,
        default=list(LR_FACTORS),
        help="candidates, x the config's lr; one value skips the choice",
    )
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="processes")
    p.add_argument("--proposal-mode", default="soco", choices=["soco", "fast", "quality"])
    p.add_argument(
        "--proposal-min-size", type=float, default=32.0, help="smallest proposal side (px)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pictures", type=int, default=4, help="val images drawn in the report")
    args = p.parse_args(argv)
    settings = RecipeSettings(
        images=args.images,
        output=args.output,
        train_json=args.train_json,
        labels=args.labels,
        label_format=args.label_format,
        classes=args.classes,
        val_json=args.val_json,
        detector=args.detector,
        baseline=args.baseline,
        pretrain_iters=args.pretrain_iters,
        finetune_iters=args.finetune_iters,
        lr=args.lr,
        lr_factors=tuple(args.lr_factors),
        device=args.device,
        workers=args.workers,
        proposal_mode=args.proposal_mode,
        proposal_min_size=args.proposal_min_size,
        seed=args.seed,
        pictures=args.pictures,
    )
    try:
        run_recipe(settings)
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
