"""Command line: detections of a trained model on new images, as a COCO results json and pictures.

Example (a fine-tune of tools/recipe.py or train_net.py; its output folder holds both files)::

    python tools/predict.py --config-file OUT/finetune_aligndet/config.yaml \\
        --checkpoint OUT/finetune_aligndet/model_final.pth --input my_images/ --output OUT/predict

Writes ``<output>/predictions.json`` (COCO results: ``image_id`` is the index of the image in
file-name order, ``file_name`` beside it; every detection the model keeps, whatever ``--score``)
and ``<output>/pictures/<image>.jpg`` with the detections of score >= ``--score`` drawn by
Detectron2's Visualizer; a summary line at the end. Trailing ``key=value`` arguments override
the config as in train_net.py.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import List, Optional

__all__ = ["main"]


def _inputs(path: str) -> List[str]:
    from ..data.checks import list_image_files

    if os.path.isfile(path):
        return [path]
    return [os.path.join(path, f) for f in list_image_files(path)]


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(
        prog="predict.py",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--config-file", "--config", required=True, help="a config, or a run's config.yaml"
    )
    p.add_argument("--checkpoint", required=True, help="the trained weights (model_final.pth)")
    p.add_argument("--input", required=True, help="an image or a folder of images")
    p.add_argument("--output", required=True, help="folder for predictions.json and pictures/")
    p.add_argument("--score", type=float, default=0.5, help="score threshold of the pictures")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="key=value config overrides")
    args = p.parse_args(argv)
    from ..engine.predictor import predict_images

    t = time.time()
    try:
        r = predict_images(
            args.config_file,
            args.checkpoint,
            _inputs(args.input),
            args.output,
            score=args.score,
            opts=args.opts,
        )
    except (OSError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    top = ", ".join(f"{n} {k}" for k, n in list(r["per_class"].items())[:6]) or "none"
    print(
        f"[predict] {r['images']} images in {time.time() - t:.1f} s: {r['detections']} detections "
        f"with score >= {args.score:g} ({top}); {r['json']}, pictures in "
        f"{os.path.join(args.output, 'pictures')}/"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
