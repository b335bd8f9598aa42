"""The end-to-end demo: the own-data recipe (tools/recipe.py) on the bundled data, datasets/coco64.

Its 64 COCO photos stand in for a user's folder: the 32 train images are the pool and the labeled
set, the 32 val images the val set. The recipe checks them, makes selective-search proposals of
the pool, pre-trains Faster R-CNN (or ``--detector``) on them without labels, exports it,
fine-tunes it on the labels with the backbone frozen and parallel adapters, and the same from
scratch, scores both on val and draws the detections; the demo adds pictures of the proposals and
of the two augmented views that pre-training compares. Everything lands in
``<output-dir>/<detector>/``, with ``report.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import List, Optional

from ..experiment import DETECTORS
from ..experiment.recipe import RecipeSettings, run_recipe
from . import proposals as proposals_cli
from . import visualize_views

__all__ = ["main"]

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "datasets" / "coco64"
# The demo's lengths, for about 8 minutes on 2 CPU cores (docs/GETTING_STARTED.md): 10 epochs of
# the 32 pool images in pre-training (160 iterations at 2 per batch), and the recipe's 12 epochs
# of the 32 labeled ones in each fine-tune (192 iterations).
PRETRAIN_ITERS = 160
# The demo's lr: 5x the config's (the largest of the recipe's candidates). Choosing it on 8
# held-out images of 32 would cost four more fine-tunes and choose on noise.
LR_FACTOR = 5.0


def _pictures(out: Path, images: str) -> str:
    """Two images' proposals and two views, as pre-training sees them."""
    props, pictures = str(out / "proposals" / "pool.json"), str(out / "pictures")
    common = ["--proposals", props, "--image-root", images, "--output-dir", pictures]
    proposals_cli.main(["draw", *common, "--num-images", "2"])
    views = ["--num-images", "2", "--short-edge", "288", "320", "352", "--max-size", "533"]
    visualize_views.main([*common, *views])
    return pictures


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="demo.py", description=__doc__.splitlines()[0])
    p.add_argument(
        "--output-dir", default="output/demo", help="everything goes to <output-dir>/<detector>/"
    )
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="processes")
    p.add_argument("--detector", default="faster_rcnn", choices=list(DETECTORS))
    p.add_argument("--pretrain-iters", type=int, default=PRETRAIN_ITERS)
    p.add_argument("--finetune-iters", type=int, default=0, help="default: 12 epochs (192)")
    args = p.parse_args(argv)

    t0 = time.time()
    out = Path(args.output_dir).resolve() / args.detector
    images = str(DATA / "images")
    report = run_recipe(
        RecipeSettings(
            images=images,
            output=str(out),
            train_json=str(DATA / "annotations" / "train.json"),
            val_json=str(DATA / "annotations" / "val.json"),
            detector=args.detector,
            baseline=True,
            pretrain_iters=args.pretrain_iters,
            finetune_iters=args.finetune_iters,
            lr_factors=(LR_FACTOR,),
            workers=args.workers,
        )
    )
    pictures = _pictures(out, images)
    print("\n" + report.read_text().split("## AP on the val images\n\n", 1)[1].split("\n\n")[0])
    state = json.loads((out / "recipe.json").read_text())
    shown = sorted((out / "predict_val" / "pictures").glob("*.jpg"))
    print(f"\nDetections drawn on val images: {', '.join(str(p) for p in shown)}")
    print(f"Proposals and the two views: {pictures}/; the whole report: {report}")
    print(
        f"\n[demo] done in {(time.time() - t0) / 60:.1f} min. With {state['data']['train']} "
        "labeled images and 80 classes these numbers show that every stage works, not what "
        "pre-training is worth: benchmarks/README.md measures that, on VOC with 3 folds."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
