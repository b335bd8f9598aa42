"""Low-data splits of a COCO json: a labeled subset per percent and seed, and the rest.

The files are named as SoftTeacher and AlignDet name theirs (``<stem>.<seed>@<percent>.json`` and
``<stem>.<seed>@<percent>-unlabeled.json``), so configs written for their semi-COCO splits find
them.

Which images are labeled: each seed draws one permutation of the images that have at least one
non-crowd box (numpy's PCG64 generator, whose stream is the same on every platform and numpy
version since 1.17), and a split of ``p`` percent takes its first ``round(p / 100 * N)`` images,
``N`` counting every image of the json. So, by default, splits of one seed are nested: the 5 % split
contains the 1 % split. ``nested=False`` draws an independent permutation per (seed, percent).
Images without boxes are never labeled (they teach a detector nothing) and always go to the
unlabeled part; the ``info`` block of each file counts them.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Dict, List, Sequence

import numpy as np

__all__ = ["SplitError", "split_name", "low_data_split", "write_low_data_splits"]


class SplitError(ValueError):
    """A split cannot be made; the message names the json and the problem."""


def split_name(stem: str, seed: int, percent: float) -> str:
    """``<stem>.<seed>@<percent>`` (``train.1@10``, ``train.2@0.5``), without ``.json``."""
    return f"{stem}.{seed}@{percent:g}"


def _labeled_count(percent: float, num_images: int) -> int:
    # Round half up, not Python's round-half-even, so that 2.5 % of 100 images is 3 on every system.
    return int(math.floor(percent / 100.0 * num_images + 0.5))


def low_data_split(
    data: Dict[str, Any],
    percent: float,
    seed: int,
    *,
    nested: bool = True,
    source: str = "<json>",
) -> Dict[str, Any]:
    """Chooses the labeled images of one split.

    Args:
        data: a COCO instances json, loaded.
        percent: the labeled share in percent of all images of ``data`` (0 < percent < 100).
        seed: the fold; the same seed gives the same images on any machine.
        nested: one permutation per seed for every percent (the splits of a seed are nested); else
            one per (seed, percent).
        source: the json's path, for error messages.

    Returns:
        dict: ``labeled`` (image ids, in permutation order), ``unlabeled`` (the other image ids, in
        file order), ``num_images``, ``num_without_boxes``.

    Raises:
        SplitError: a percent outside (0, 100), one that rounds to 0 images, or more labeled images
            than the json has images with boxes.
    """
    if not 0 < percent < 100:
        raise SplitError(f"{source}: percent must be in (0, 100), got {percent:g}")
    images = data["images"]
    with_boxes = {a["image_id"] for a in data["annotations"] if not a.get("iscrowd", 0)}
    candidates = [im["id"] for im in images if im["id"] in with_boxes]
    n = _labeled_count(percent, len(images))
    if n == 0:
        raise SplitError(
            f"{source}: {percent:g} % of its {len(images)} images rounds to 0 images; use a larger "
            f"percent (at least {50.0 / len(images):.3g} % labels one image)"
        )
    if n > len(candidates):
        raise SplitError(
            f"{source}: {percent:g} % is {n} images, but only {len(candidates)} of its "
            f"{len(images)} images have a box"
        )
    key = [seed] if nested else [seed, int(round(percent * 1000))]
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(key)))
    order = rng.permutation(len(candidates))
    labeled = [candidates[i] for i in order[:n]]
    chosen = set(labeled)
    return {
        "labeled": labeled,
        "unlabeled": [im["id"] for im in images if im["id"] not in chosen],
        "num_images": len(images),
        "num_without_boxes": len(images) - len(candidates),
    }


def _subset(data: Dict[str, Any], ids: Sequence[Any], info: Dict[str, Any]) -> Dict[str, Any]:
    keep = set(ids)
    out = dict(data)
    out["images"] = [im for im in data["images"] if im["id"] in keep]
    out["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
    old = data.get("info")
    out["info"] = dict(old if isinstance(old, dict) else {}, low_data_split=info)
    return out


def write_low_data_splits(
    json_file: str,
    output_dir: str,
    percents: Sequence[float],
    seeds: Sequence[int],
    *,
    nested: bool = True,
) -> List[Dict[str, Any]]:
    """Writes ``<stem>.<seed>@<percent>.json`` and ``...-unlabeled.json`` for every percent and
    seed.

    Args:
        json_file: a COCO instances json.
        output_dir: folder for the split files (created).
        percents: labeled shares in percent.
        seeds: folds.
        nested: see :func:`low_data_split`.

    Returns:
        list[dict]: per split, ``labeled_file``, ``unlabeled_file``, ``seed``, ``percent`` and the
        counts (``labeled_images``, ``unlabeled_images``, ``labeled_boxes``,
        ``images_without_boxes``).

    Raises:
        SplitError: the json cannot be read, is not a COCO instances json, or a split cannot be
            made (nothing is written then).
    """
    try:
        with open(json_file) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise SplitError(f"{json_file}: cannot read the json ({e})") from e
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise SplitError(f"{json_file}: no '{key}' list: not a COCO instances json")
    stem = os.path.basename(json_file)
    stem = stem[: -len(".json")] if stem.endswith(".json") else stem
    # Every split is made before any file is written, so a bad percent loses nothing.
    splits = [
        (seed, p, low_data_split(data, p, seed, nested=nested, source=json_file))
        for seed in seeds
        for p in percents
    ]
    os.makedirs(output_dir, exist_ok=True)
    written = []
    for seed, p, s in splits:
        name = split_name(stem, seed, p)
        info = {
            "source": os.path.abspath(json_file),
            "seed": seed,
            "percent": p,
            "nested": nested,
            "images": s["num_images"],
            "labeled_images": len(s["labeled"]),
            "unlabeled_images": len(s["unlabeled"]),
            "images_without_boxes": s["num_without_boxes"],
        }
        row: Dict[str, Any] = {"seed": seed, "percent": p, **info}
        for suffix, ids, part in (
            ("", s["labeled"], "labeled"),
            ("-unlabeled", s["unlabeled"], "unlabeled"),
        ):
            path = os.path.join(output_dir, f"{name}{suffix}.json")
            sub = _subset(data, ids, dict(info, part=part))
            tmp = f"{path}.tmp{os.getpid()}"  # two processes may write the same split
            with open(tmp, "w") as f:
                json.dump(sub, f)
            os.replace(tmp, path)
            row[f"{part}_file"] = path
            if part == "labeled":
                row["labeled_boxes"] = len(sub["annotations"])
        written.append(row)
    return written
