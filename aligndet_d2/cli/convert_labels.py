"""Command line: Pascal VOC XML or YOLO txt labels to a COCO instances json.

Examples::

    python tools/convert_labels.py --format voc --labels my_data/Annotations \\
        --images my_data/JPEGImages --output my_data/train.json
    python tools/convert_labels.py --format yolo --labels my_data/labels \\
        --images my_data/images --classes my_data/data.yaml --output my_data/train.json

Every image of ``--images`` that decodes is kept (one without a label file as a background
image); boxes outside their image are clipped, and boxes that are degenerate, of an unknown class
or in a file without an image are dropped, each listed in the table printed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import List, Optional

from ..data.checks import DatasetError
from ..data.importers import LABEL_FORMATS, format_changes, import_labels, read_class_names

__all__ = ["main"]


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="convert_labels.py", description=__doc__.splitlines()[0])
    p.add_argument("--format", required=True, choices=LABEL_FORMATS, help="the label files' format")
    p.add_argument("--labels", required=True, help="folder of .xml (voc) or .txt (yolo) files")
    p.add_argument("--images", required=True, help="folder of the images")
    p.add_argument(
        "--classes",
        default="",
        help="class names in order: a file (one per line, or a YOLO data.yaml) or a,b,c; "
        "default: sorted names found (voc), <labels>/classes.txt (yolo)",
    )
    p.add_argument("--output", required=True, help="the COCO json to write")
    args = p.parse_args(argv)
    try:
        classes = read_class_names(args.classes) if args.classes else None
        coco, changes = import_labels(args.labels, args.images, args.format, classes)
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(coco, f)
    print(format_changes(changes))
    labelled = len({a["image_id"] for a in coco["annotations"]})
    print(
        f"{args.output}: {len(coco['images'])} images ({labelled} with boxes), "
        f"{len(coco['annotations'])} boxes, {len(coco['categories'])} classes "
        f"({', '.join(c['name'] for c in coco['categories'][:10])}); "
        f"{sum(c.action == 'clipped' for c in changes)} boxes clipped, "
        f"{sum(c.action == 'dropped' for c in changes)} dropped"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
