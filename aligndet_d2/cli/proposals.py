"""Command line for selective-search proposals: ``generate``, ``check`` and ``draw``.

Examples::

    python tools/proposals.py generate --image-root datasets/coco64/images \\
        --coco-json datasets/coco64/annotations/train.json --output output/proposals/train.json \\
        --workers 2
    python tools/proposals.py check --proposals output/proposals/train.json \\
        --image-root datasets/coco64/images
    python tools/proposals.py draw --proposals output/proposals/train.json \\
        --image-root datasets/coco64/images --output-dir output/proposals/pictures --num-images 4
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import List, Optional

from ..data.proposals import (
    MODES,
    ProposalFilter,
    ProposalsError,
    ProposalSettings,
    check_proposals,
    generate_proposals,
)

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="proposals.py",
        description="Unsupervised box proposals (OpenCV selective search) saved as a COCO json.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser(
        "generate",
        help="run selective search over a folder of images or a COCO json's image list",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Parallel and resumable: re-run the same command after a crash or a kill "
        "and it continues; the result does not depend on --workers.",
    )
    g.add_argument("--image-root", required=True, help="folder with the images")
    g.add_argument(
        "--coco-json",
        help="use this COCO json's image list (ids, sizes and licence fields are kept); "
        "default: every image file under --image-root",
    )
    g.add_argument("--output", required=True, help="proposals json to write")
    g.add_argument(
        "--mode",
        default="soco",
        choices=MODES,
        help="soco: single strategy, k 300, sigma 0.9 (SoCo's settings); fast / quality: OpenCV's "
        "presets (many more boxes, 6x / 25x slower)",
    )
    g.add_argument("--workers", type=int, default=1, help="worker processes")
    f = ProposalFilter()
    g.add_argument("--min-size", type=float, default=f.min_size, help="min box side in pixels")
    g.add_argument("--min-aspect", type=float, default=f.min_aspect, help="min width / height")
    g.add_argument("--max-aspect", type=float, default=f.max_aspect, help="max width / height")
    g.add_argument(
        "--max-scale", type=float, default=f.max_scale, help="max sqrt(box area / image area)"
    )
    g.add_argument("--top-k", type=int, default=None, help="keep the first k boxes per image")
    g.add_argument(
        "--dedup-iou",
        type=float,
        default=None,
        help="drop boxes overlapping an earlier one above it",
    )
    g.add_argument("--seed", type=int, default=0, help="srand() seed given before each image")
    g.add_argument(
        "--strict",
        action="store_true",
        help="stop at a missing or corrupt image (default: skip it)",
    )
    g.add_argument(
        "--overwrite",
        action="store_true",
        help="start over instead of resuming or keeping a result",
    )
    g.add_argument("--check", action="store_true", help="validate the result when done")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")

    c = sub.add_parser("check", help="validate a proposals json against its images")
    c.add_argument("--proposals", required=True, help="proposals json")
    c.add_argument("--image-root", required=True, help="folder the json's file names are under")
    c.add_argument("--no-decode", action="store_true", help="check existence only, do not decode")

    d = sub.add_parser(
        "draw",
        help="draw images' proposals to PNG files",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    d.add_argument("--proposals", required=True, help="proposals json")
    d.add_argument("--image-root", required=True, help="folder the json's file names are under")
    d.add_argument("--output-dir", required=True, help="where to write <image>_proposals.png")
    d.add_argument("--num-images", type=int, default=4, help="draw the first N images")
    d.add_argument("--file-names", nargs="*", help="draw these images (file names in the json)")
    d.add_argument("--max-boxes", type=int, default=30, help="draw the first K boxes of each image")
    return parser


def _generate(args) -> int:
    settings = ProposalSettings(
        mode=args.mode,
        filter=ProposalFilter(
            min_size=args.min_size,
            min_aspect=args.min_aspect,
            max_aspect=args.max_aspect,
            max_scale=args.max_scale,
            top_k=args.top_k,
            dedup_iou=args.dedup_iou,
        ),
        seed=args.seed,
    )
    if args.workers < 1:
        raise ProposalsError(f"--workers {args.workers} (allowed: an integer >= 1)")
    s = generate_proposals(
        args.image_root,
        args.output,
        coco_json=args.coco_json,
        settings=settings,
        num_workers=args.workers,
        strict=args.strict,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    per_image = s["num_proposals"] / max(s["num_images"], 1)
    print(
        f"wrote {s['output']}: {s['num_images']} images, {s['num_proposals']} proposals "
        f"({per_image:.1f} per image), {len(s['skipped'])} skipped"
        + (" (resumed run)" if s["resumed"] else "")
    )
    for sk in s["skipped"]:
        print(f"  skipped {sk['file_name']}: {sk['reason']}")
    fb = {k: v for k, v in s["fallbacks"].items() if v}
    if fb:
        print(f"  images kept by a looser filter (or left with none): {fb}")
    if args.check:
        r = check_proposals(args.output, args.image_root)
        print(f"check OK: {r['num_images']} images, {r['num_proposals']} proposals")
    return 0


def _check(args) -> int:
    r = check_proposals(args.proposals, args.image_root, decode=not args.no_decode)
    print(f"{args.proposals}: OK ({r['num_images']} images, {r['num_proposals']} proposals)")
    return 0


def _draw(args) -> int:
    from detectron2.data.detection_utils import read_image

    from ..utils.visualize import draw_boxes, save_picture

    with open(args.proposals) as f:
        data = json.load(f)
    images = data["images"]
    if args.file_names:
        wanted = set(args.file_names)
        images = [im for im in images if im["file_name"] in wanted]
        unknown = wanted - {im["file_name"] for im in images}
        if unknown:
            raise ProposalsError(f"{args.proposals}: no image named {sorted(unknown)}")
    else:
        images = images[: args.num_images]
    by_image = {}
    for a in data["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    for im in images:
        anns = sorted(by_image.get(im["id"], []), key=lambda a: a.get("rank", 0))[: args.max_boxes]
        boxes = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)]
        img = read_image(os.path.join(args.image_root, im["file_name"]), format="RGB")
        out = save_picture(draw_boxes(img, boxes), args.output_dir, im["file_name"], "proposals")
        print(f"wrote {out} ({len(boxes)} of {len(by_image.get(im['id'], []))} boxes)")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return {"generate": _generate, "check": _check, "draw": _draw}[args.command](args)
    except ProposalsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
