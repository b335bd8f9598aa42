"""Checks of a labelled COCO dataset before anything trains on it: every image, box and class.

Detectron2 reads an image only when its loader reaches it, so a missing file is a raw
``FileNotFoundError`` mid-run and a truncated JPEG an ``OSError`` that names no file, while a box
outside its image, a negative width or a class id that the json does not declare train without a
word. :func:`check_coco_dataset` reads the json and decodes every image first and reports all the
problems at once, one line each naming the file, as a :class:`DatasetError`.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .proposals import IMAGE_EXTENSIONS

__all__ = [
    "IMAGE_EXTENSIONS",
    "DatasetError",
    "Problem",
    "check_coco_dataset",
    "coco_dataset_problems",
    "check_image",
    "check_same_classes",
    "class_names",
    "format_problems",
    "list_image_files",
]

# How far a box may poke out of its image: COCO rounds its boxes to 0.01 px after clipping, and
# VOC's 1-based pixel boxes end one past the last pixel.
BOX_TOLERANCE = 1.0
# EXIF orientations that swap width and height (Detectron2's read_image applies them).
_TRANSPOSED = (5, 6, 7, 8)


class DatasetError(ValueError):
    """A dataset that cannot be trained or evaluated on; the message lists every problem."""


@dataclass(frozen=True)
class Problem:
    """One problem of a dataset: the file it is in (a json or an image) and what is wrong."""

    file: str
    problem: str

    def __str__(self) -> str:
        return f"{self.file}: {self.problem}"


def format_problems(problems: Sequence[Problem], what: str, limit: int = 20) -> str:
    """A header line counting the problems of ``what``, then one line per problem (the first
    ``limit``), then how many more there are."""
    counts = Counter(p.problem.split(" (")[0].split(":")[0] for p in problems)
    kinds = ", ".join(f"{n} x {k}" for k, n in counts.most_common(4))
    lines = [f"{what}: {len(problems)} problem(s) ({kinds}); nothing was trained"]
    lines += [f"  {p}" for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"  ... and {len(problems) - limit} more")
    return "\n".join(lines)


def check_image(path: str) -> Tuple[Optional[Tuple[int, int]], Optional[str]]:
    """Decodes one image as Detectron2 will read it.

    Returns:
        ``((width, height), None)`` after EXIF orientation, or ``(None, problem)`` when the file is
        missing, not an image or truncated.
    """
    from PIL import Image, UnidentifiedImageError

    if not os.path.isfile(path):
        return None, "image file does not exist"
    try:
        with Image.open(path) as im:
            w, h = im.size
            orientation = im.getexif().get(0x0112, 1)
            # A reduced-size JPEG decode reads every byte of the file, so it finds a truncated
            # file at a fraction of a full decode's cost.
            im.draft("RGB", (max(1, w // 8), max(1, h // 8)))
            im.load()
    except UnidentifiedImageError:
        return None, "not an image that PIL can read"
    except (OSError, SyntaxError, ValueError) as e:
        return None, f"corrupt image ({e})"
    return ((h, w) if orientation in _TRANSPOSED else (w, h)), None


def list_image_files(image_root: str) -> List[str]:
    """Image files under ``image_root`` (recursively), relative to it, sorted.

    Raises:
        DatasetError: the folder does not exist or holds no image.
    """
    if not os.path.isdir(image_root):
        raise DatasetError(f"{image_root}: not a folder of images")
    out = []
    for dirpath, _, files in os.walk(image_root):
        for f in files:
            if f.lower().endswith(IMAGE_EXTENSIONS):
                out.append(os.path.relpath(os.path.join(dirpath, f), image_root))
    if not out:
        raise DatasetError(
            f"{image_root}: no image files (looked for {', '.join(IMAGE_EXTENSIONS)})"
        )
    return sorted(out)


def _read_json(json_file: str) -> Tuple[Optional[Dict[str, Any]], List[Problem]]:
    try:
        with open(json_file) as f:
            data = json.load(f)
    except FileNotFoundError:
        return None, [Problem(json_file, "the json file does not exist")]
    except (OSError, json.JSONDecodeError) as e:
        return None, [Problem(json_file, f"cannot read the json ({e})")]
    if not isinstance(data, dict):
        return None, [Problem(json_file, "not a COCO instances json (not an object)")]
    problems = [
        Problem(json_file, f"no '{key}' list: not a COCO instances json")
        for key in ("images", "annotations", "categories")
        if not isinstance(data.get(key), list)
    ]
    return (None if problems else data), problems


def _check_box(ann: Dict[str, Any], size: Optional[Tuple[int, int]]) -> Optional[str]:
    bbox = ann.get("bbox")
    if not (
        isinstance(bbox, (list, tuple))
        and len(bbox) == 4
        and all(isinstance(v, (int, float)) for v in bbox)
    ):
        return f"box {bbox!r} is not 4 numbers [x, y, width, height]"
    x, y, w, h = bbox
    if not (w > 0 and h > 0):
        return f"degenerate box {bbox} (width and height must be > 0)"
    if size is not None:
        W, H = size
        t = BOX_TOLERANCE
        if x < -t or y < -t or x + w > W + t or y + h > H + t:
            return f"box {bbox} outside the {W}x{H} image"
    return None


def check_coco_dataset(
    json_file: str,
    image_root: str,
    *,
    num_classes: Optional[int] = None,
    num_classes_key: str = "num_classes",
    decode: bool = True,
) -> Dict[str, Any]:
    """:func:`coco_dataset_problems`, raising them.

    Returns:
        The json, loaded.

    Raises:
        DatasetError: listing every problem, one line each naming the file.
    """
    data, problems = coco_dataset_problems(
        json_file,
        image_root,
        num_classes=num_classes,
        num_classes_key=num_classes_key,
        decode=decode,
    )
    if problems:
        raise DatasetError(format_problems(problems, f"dataset {json_file}"))
    return data


def coco_dataset_problems(
    json_file: str,
    image_root: str,
    *,
    num_classes: Optional[int] = None,
    num_classes_key: str = "num_classes",
    decode: bool = True,
) -> Tuple[Optional[Dict[str, Any]], List[Problem]]:
    """Checks a labelled COCO json and its images before training or evaluation.

    Checked: the json is a COCO instances json with at least one image; image ids are unique;
    every image exists under ``image_root``, decodes (``decode``) and has the json's width and
    height; every annotation is of a known image and a declared category, with a box of 4 numbers,
    positive width and height, inside its image (within 1 px); the json declares
    ``num_classes`` categories when that is given.

    Args:
        json_file: the COCO json.
        image_root: the folder its ``file_name`` entries are relative to.
        num_classes: the model's number of classes, or None not to compare.
        num_classes_key: the config key of ``num_classes``, for the message.
        decode: decode every image (about 0.5 ms each for a VOC photo) rather than check that
            it exists.

    Returns:
        ``(the json or None when it cannot be read, the problems)``.
    """
    data, problems = _read_json(json_file)
    if data is None:
        return None, problems
    if not data["images"]:
        problems.append(Problem(json_file, "no images"))
    cats = {c.get("id"): c.get("name") for c in data["categories"]}
    if num_classes is not None and len(cats) != num_classes:
        problems.append(
            Problem(
                json_file,
                f"the model has {num_classes} classes but the json declares {len(cats)} "
                f"categories: set {num_classes_key}={len(cats)}",
            )
        )
    sizes: Dict[Any, Optional[Tuple[int, int]]] = {}
    files: Dict[Any, str] = {}
    for im in data["images"]:
        name = im.get("file_name")
        if im.get("id") in files:
            problems.append(Problem(json_file, f"image id {im.get('id')} appears twice"))
            continue
        path = os.path.join(image_root, str(name))
        files[im.get("id")] = path
        if decode:
            size, problem = check_image(path)
        else:
            size, problem = None, None if os.path.isfile(path) else "image file does not exist"
        if problem:
            problems.append(Problem(path, problem))
            sizes[im.get("id")] = None
            continue
        declared = (im.get("width"), im.get("height"))
        if size is not None and declared != size:
            problems.append(
                Problem(
                    path,
                    f"the image is {size[0]}x{size[1]} but the json says "
                    f"{declared[0]}x{declared[1]}",
                )
            )
        sizes[im.get("id")] = (
            declared if all(isinstance(v, (int, float)) for v in declared) else size
        )
    for a in data["annotations"]:
        where = f"annotation {a.get('id')}"
        if a.get("image_id") not in files:
            problems.append(
                Problem(json_file, f"{where}: image id {a.get('image_id')} is not in 'images'")
            )
            continue
        image = files[a["image_id"]]
        if a.get("category_id") not in cats:
            problems.append(
                Problem(
                    image,
                    f"unknown class: {where} has category_id {a.get('category_id')!r}, which "
                    f"the json's categories do not declare (ids {sorted(cats)[:10]})",
                )
            )
        problem = _check_box(a, sizes.get(a["image_id"]))
        if problem:
            problems.append(Problem(image, f"{where}: {problem}"))
    return data, problems


def class_names(data: Dict[str, Any]) -> List[str]:
    """A COCO json's class names in the order Detectron2 numbers them (by category id)."""
    return [c.get("name") for c in sorted(data["categories"], key=lambda c: c.get("id"))]


def check_same_classes(train: Tuple[str, List[str]], test: Tuple[str, List[str]]) -> None:
    """Refuses an evaluation dataset whose classes are not the training dataset's in the same
    order: Detectron2 numbers the classes of each json by sorted category id, so the model's
    class k would be scored as another class (same names under other ids scored AP 0.04).

    Args:
        train, test: ``(dataset name, class names in Detectron2's order)`` of each dataset.

    Raises:
        DatasetError: naming both datasets and the first classes that differ.
    """
    (train_name, a), (test_name, b) = train, test
    if list(a) == list(b):
        return
    diff = [
        f"class {k}: {x!r} vs {y!r}"
        for k, (x, y) in enumerate(zip(list(a) + [None] * len(b), list(b) + [None] * len(a)))
        if x != y and k < max(len(a), len(b))
    ]
    raise DatasetError(
        f"{test_name}: its {len(b)} classes are not the {len(a)} of the training dataset "
        f"{train_name} in the same order (by category id): " + "; ".join(diff[:4]) + "; the "
        "model would be scored against the wrong classes. Give both jsons the same categories."
    )
