"""Labels in Pascal VOC XML or YOLO txt as a COCO instances json, with every change recorded.

Detectron2 reads COCO json; most labelling tools also write VOC XML (one file per image, 1-based
pixel boxes) or YOLO txt (one file per image, ``class cx cy w h`` normalised to the image). The
importers keep every image of the folder (one without labels is a background image), clip boxes
to their image and drop what cannot be trained on, and say so: each clipped or dropped box is a
:class:`Change` naming the file, the box and why.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .checks import DatasetError, check_image, list_image_files

__all__ = [
    "LABEL_FORMATS",
    "Change",
    "format_changes",
    "import_labels",
    "read_class_names",
    "voc_to_coco",
    "yolo_to_coco",
]

LABEL_FORMATS = ("voc", "yolo")


@dataclass(frozen=True)
class Change:
    """A box (or a label file) the importer clipped or dropped."""

    file: str
    what: str  # the box or line, as in the file
    action: str  # "clipped" or "dropped"
    reason: str


def format_changes(changes: Sequence[Change], limit: int = 20) -> str:
    """A table of the changes: counts per action and reason, then the first ``limit`` rows."""
    if not changes:
        return "no box was clipped or dropped"
    counts = Counter((c.action, c.reason) for c in changes)
    lines = ["| action | reason | boxes |", "|---|---|---|"]
    lines += [f"| {a} | {r} | {n} |" for (a, r), n in counts.most_common()]
    lines += ["", "| file | box | action | reason |", "|---|---|---|---|"]
    lines += [f"| {c.file} | {c.what} | {c.action} | {c.reason} |" for c in changes[:limit]]
    if len(changes) > limit:
        lines.append(f"| ... {len(changes) - limit} more | | | |")
    return "\n".join(lines)


def read_class_names(spec: str) -> List[str]:
    """Class names from a file (one per line, as YOLO's ``classes.txt``; or a ``names:`` list of a
    YOLO ``data.yaml``) or a comma-separated list."""
    if os.path.isfile(spec):
        if spec.endswith((".yaml", ".yml")):
            import yaml

            with open(spec) as f:
                names = (yaml.safe_load(f) or {}).get("names")
            if isinstance(names, dict):  # {0: name, 1: name}
                names = [names[k] for k in sorted(names)]
            if not isinstance(names, list):
                raise DatasetError(f"{spec}: no 'names' list of class names")
            return [str(n) for n in names]
        with open(spec) as f:
            return [line.strip() for line in f if line.strip()]
    return [n.strip() for n in spec.split(",") if n.strip()]


def _clip(
    box: Tuple[float, float, float, float], size: Tuple[int, int]
) -> Tuple[Tuple[float, float, float, float], bool]:
    """An XYXY box clipped to a ``(width, height)`` image, and whether it changed."""
    W, H = size
    x0, y0, x1, y1 = box
    clipped = (
        min(max(x0, 0.0), W),
        min(max(y0, 0.0), H),
        min(max(x1, 0.0), W),
        min(max(y1, 0.0), H),
    )
    return clipped, clipped != tuple(box)


class _Builder:
    """Collects COCO images, annotations and categories, and the changes."""

    def __init__(self, classes: Sequence[str]):
        self.classes = list(classes)
        self.images: List[Dict[str, Any]] = []
        self.annotations: List[Dict[str, Any]] = []
        self.changes: List[Change] = []

    def image(self, file_name: str, size: Tuple[int, int]) -> int:
        self.images.append(
            {
                "id": len(self.images) + 1,
                "file_name": file_name,
                "width": size[0],
                "height": size[1],
            }
        )
        return len(self.images)

    def box(self, image_id: int, label_file: str, what: str, cls: int, box, size) -> None:
        """Adds an XYXY box of class index ``cls`` (clipped, or dropped when degenerate)."""
        (x0, y0, x1, y1), clipped = _clip(box, size)
        if not (x1 - x0 > 0 and y1 - y0 > 0):
            reason = "outside the image" if clipped else "zero or negative width or height"
            self.changes.append(Change(label_file, what, "dropped", reason))
            return
        if clipped:
            self.changes.append(Change(label_file, what, "clipped", "outside the image"))
        w, h = x1 - x0, y1 - y0
        self.annotations.append(
            {
                "id": len(self.annotations) + 1,
                "image_id": image_id,
                "category_id": cls + 1,
                "bbox": [round(x0, 2), round(y0, 2), round(w, 2), round(h, 2)],
                "area": round(w * h, 2),
                "iscrowd": 0,
            }
        )

    def coco(self, source: str) -> Dict[str, Any]:
        return {
            "info": {"description": f"converted by tools/convert_labels.py from {source}"},
            "images": self.images,
            "annotations": self.annotations,
            "categories": [{"id": i + 1, "name": n} for i, n in enumerate(self.classes)],
        }


def _images_with_sizes(image_root: str, builder: _Builder) -> List[Tuple[str, Tuple[int, int]]]:
    """The images of ``image_root`` that decode, with their sizes; the others are dropped with a
    change each."""
    out = []
    for rel in list_image_files(image_root):
        size, problem = check_image(os.path.join(image_root, rel))
        if problem:
            builder.changes.append(Change(rel, "(image)", "dropped", problem))
        else:
            out.append((rel, size))
    return out


def voc_to_coco(
    labels_dir: str, image_root: str, classes: Optional[Sequence[str]] = None
) -> Tuple[Dict[str, Any], List[Change]]:
    """Pascal VOC XML files (``<stem>.xml`` beside or apart from the images) as a COCO json.

    VOC boxes are 1-based and inclusive: ``[xmin - 1, ymin - 1, xmax, ymax]`` in pixels, as
    Detectron2's VOC loader reads them. ``difficult`` objects are kept as ordinary boxes.

    Args:
        labels_dir: the folder of XML files.
        image_root: the folder of images; every image that decodes is kept, one without an XML
            file as a background image.
        classes: the class names in the order to number them; None: every name found, sorted.
            A box of another class is dropped.

    Returns:
        ``(coco json, changes)``.
    """
    objects: Dict[str, List[Tuple[str, str, Tuple[float, ...]]]] = {}
    found = set()
    builder = _Builder([])
    for f in sorted(os.listdir(labels_dir)) if os.path.isdir(labels_dir) else []:
        if not f.endswith(".xml"):
            continue
        path = os.path.join(labels_dir, f)
        try:
            root = ET.parse(path).getroot()
        except ET.ParseError as e:
            builder.changes.append(Change(f, "(file)", "dropped", f"not valid XML ({e})"))
            continue
        rows = []
        for i, obj in enumerate(root.findall("object")):
            name = (obj.findtext("name") or "").strip()
            bb = obj.find("bndbox")
            try:
                box = tuple(float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
            except (AttributeError, TypeError, ValueError):
                builder.changes.append(Change(f, f"object {i}", "dropped", "no numeric bndbox"))
                continue
            rows.append((name, f"object {i} {name} {list(box)}", box))
            found.add(name)
        objects[os.path.splitext(f)[0]] = rows
    if not objects:
        raise DatasetError(f"{labels_dir}: no VOC .xml label files")
    builder.classes = list(classes) if classes else sorted(found)
    index = {n: i for i, n in enumerate(builder.classes)}
    for rel, size in _images_with_sizes(image_root, builder):
        image_id = builder.image(rel, size)
        stem = os.path.splitext(os.path.basename(rel))[0]
        for name, what, (x0, y0, x1, y1) in objects.pop(stem, []):
            if name not in index:
                builder.changes.append(Change(stem + ".xml", what, "dropped", "unknown class"))
                continue
            builder.box(image_id, stem + ".xml", what, index[name], (x0 - 1, y0 - 1, x1, y1), size)
    for stem in objects:
        builder.changes.append(Change(stem + ".xml", "(file)", "dropped", "no image of this name"))
    return builder.coco(labels_dir), builder.changes


def yolo_to_coco(
    labels_dir: str, image_root: str, classes: Sequence[str]
) -> Tuple[Dict[str, Any], List[Change]]:
    """YOLO txt files (``<stem>.txt``: ``class cx cy w h`` per line, normalised) as a COCO json.

    Args:
        labels_dir: the folder of txt files.
        image_root: the folder of images; every image that decodes is kept, one without a txt
            file as a background image.
        classes: the class names, class index 0 first (YOLO files hold only indices).

    Returns:
        ``(coco json, changes)``.
    """
    if not classes:
        raise DatasetError(
            f"{labels_dir}: YOLO labels hold class indices only: give the class names "
            "(--classes classes.txt, data.yaml or a,b,c)"
        )
    if not os.path.isdir(labels_dir):
        raise DatasetError(f"{labels_dir}: not a folder of YOLO .txt label files")
    txts = {os.path.splitext(f)[0]: f for f in os.listdir(labels_dir) if f.endswith(".txt")}
    txts.pop("classes", None)
    if not txts:
        raise DatasetError(f"{labels_dir}: no YOLO .txt label files")
    builder = _Builder(classes)
    for rel, size in _images_with_sizes(image_root, builder):
        image_id = builder.image(rel, size)
        stem = os.path.splitext(os.path.basename(rel))[0]
        f = txts.pop(stem, None)
        if f is None:
            continue
        W, H = size
        with open(os.path.join(labels_dir, f)) as fh:
            for n, line in enumerate(fh, 1):
                parts = line.split()
                if not parts:
                    continue
                what = f"line {n}: {line.strip()}"
                try:
                    cls, (cx, cy, w, h) = int(parts[0]), map(float, parts[1:5])
                    if len(parts) != 5:
                        raise ValueError
                except ValueError:
                    builder.changes.append(Change(f, what, "dropped", "not 'class cx cy w h'"))
                    continue
                if not 0 <= cls < len(classes):
                    builder.changes.append(Change(f, what, "dropped", "unknown class"))
                    continue
                box = ((cx - w / 2) * W, (cy - h / 2) * H, (cx + w / 2) * W, (cy + h / 2) * H)
                builder.box(image_id, f, what, cls, box, size)
    for stem, f in txts.items():
        builder.changes.append(Change(f, "(file)", "dropped", "no image of this name"))
    return builder.coco(labels_dir), builder.changes


def import_labels(
    labels_dir: str, image_root: str, label_format: str, classes: Optional[Sequence[str]] = None
) -> Tuple[Dict[str, Any], List[Change]]:
    """:func:`voc_to_coco` or :func:`yolo_to_coco` by ``label_format`` (one of
    :data:`LABEL_FORMATS`)."""
    if label_format == "voc":
        return voc_to_coco(labels_dir, image_root, classes)
    if label_format == "yolo":
        default = os.path.join(labels_dir, "classes.txt")
        if not classes and os.path.isfile(default):  # what YOLO labelling tools write
            classes = read_class_names(default)
        return yolo_to_coco(labels_dir, image_root, classes or [])
    raise DatasetError(f"unknown label format {label_format!r} (allowed: {LABEL_FORMATS})")
