"""Proposals json files (and labelled COCO files used as proposals) as Detectron2 datasets.

A proposals dataset yields standard Detectron2 dataset dicts whose ``annotations`` are the proposals
in file order (``category_id`` 0, ``bbox_mode`` XYWH_ABS). Its metadata sets ``is_proposals=True``
so that fine-tuning code can refuse it.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from typing import Any, Dict, List, Optional

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.structures import BoxMode

from .proposals import CATEGORY, ProposalsError

__all__ = [
    "check_cluster_labels",
    "cluster_categories",
    "load_proposals_json",
    "read_proposals_json",
    "register_proposals",
    "register_coco_as_proposals",
    "register_coco",
    "is_proposals_categories",
    "is_proposals_dataset",
]

logger = logging.getLogger(__name__)

# How far a box may poke out of its image before the json is refused: labelled COCO files round
# their boxes to 0.01 px after clipping.
_BOX_TOLERANCE = 1.0


def read_proposals_json(json_file: str) -> Dict[str, Any]:
    """A proposals (or any COCO instances) json as a dict, with its ``images`` and ``annotations``
    lists checked.

    Raises:
        ProposalsError: naming the json, when it cannot be read or lacks either list.
    """
    try:
        with open(json_file) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ProposalsError(f"{json_file}: cannot read the proposals json ({e})") from e
    for key in ("images", "annotations"):
        if not isinstance(data.get(key), list):
            raise ProposalsError(f"{json_file}: no '{key}' list: not a COCO/proposals json")
    return data


def load_proposals_json(
    json_file: str,
    image_root: str,
    *,
    check_files: bool = True,
) -> List[Dict[str, Any]]:
    """Loads a proposals json (or any COCO instances json) as Detectron2 dataset dicts of proposals.

    Images with no box are skipped with one warning that counts them.

    Args:
        json_file: the proposals json written by ``tools/proposals.py generate`` or
            ``tools/cluster_proposals.py`` (then ``category_id`` is the 0-based cluster), or a
            labelled COCO json, whose ground-truth boxes are then used as proposals (its labels are
            ignored, with a warning).
        image_root: folder the ``file_name`` entries are relative to.
        check_files: check that every image file exists under ``image_root``.

    Returns:
        list[dict]: one dict per image with ``file_name``, ``image_id``, ``height``, ``width`` and
        ``annotations`` (each ``{"bbox", "bbox_mode", "category_id"}``, the category 0 unless the
        json holds clusters), proposals in file order.

    Raises:
        ProposalsError: naming the json, the image and the box, when an image is not under the
            root or a box is degenerate or outside its image.
    """
    data = read_proposals_json(json_file)
    cats = data.get("categories") or []
    num_clusters = cluster_categories(cats)
    if not is_proposals_categories(cats):
        logger.warning(
            f"{json_file}: labelled dataset used for pre-training: its {len(cats)} class labels "
            "are ignored and its boxes are used as proposals"
        )

    by_image: Dict[Any, List[Dict[str, Any]]] = {}
    for a in data["annotations"]:
        if a.get("iscrowd", 0):
            continue
        by_image.setdefault(a["image_id"], []).append(a)

    dicts, empty, missing = [], [], []
    for im in data["images"]:
        path = os.path.join(image_root, im["file_name"])
        if check_files and not os.path.isfile(path):
            missing.append(im["file_name"])
            continue
        anns = []
        W, H = im["width"], im["height"]
        for a in sorted(by_image.get(im["id"], []), key=lambda a: a.get("rank", 0)):
            x, y, w, h = a["bbox"]
            where = (
                f"{json_file}: image {im['file_name']}, annotation {a.get('id')}, box {a['bbox']}"
            )
            if not (w > 0 and h > 0):
                raise ProposalsError(f"{where}: degenerate box (width and height must be > 0)")
            t = _BOX_TOLERANCE
            if x < -t or y < -t or x + w > W + t or y + h > H + t:
                raise ProposalsError(f"{where}: outside the {W}x{H} image")
            cls = 0
            if num_clusters:  # cluster pseudo-labels: cluster_k is class k - 1
                cls = a.get("category_id", 0) - 1
                if not 0 <= cls < num_clusters:
                    raise ProposalsError(
                        f"{where}: category_id {a.get('category_id')} is not one of the "
                        f"{num_clusters} clusters"
                    )
            anns.append({"bbox": [x, y, w, h], "bbox_mode": BoxMode.XYWH_ABS, "category_id": cls})
        if not anns:
            empty.append(im["file_name"])
            continue
        dicts.append(
            {"file_name": path, "image_id": im["id"], "height": H, "width": W, "annotations": anns}
        )
    if missing:
        raise ProposalsError(
            f"{json_file}: {len(missing)} of {len(data['images'])} images are not under the image "
            f"root {image_root!r} (first: {missing[:3]}); is this proposals file for other images?"
        )
    if empty:
        logger.warning(
            f"{json_file}: skipped {len(empty)} of {len(data['images'])} images that have no "
            f"proposals (first: {empty[:3]})"
        )
    if not dicts:
        raise ProposalsError(f"{json_file}: no image has any proposal; nothing to train on")
    return dicts


def register_proposals(name: str, json_file: str, image_root: str) -> None:
    """Registers a proposals json plus image root as the Detectron2 dataset ``name``.

    The dataset is loaded lazily (on ``DatasetCatalog.get``), as Detectron2's
    ``register_coco_instances`` does. Its metadata has ``thing_classes=["selective_search"]`` and
    ``is_proposals=True``.
    """
    DatasetCatalog.register(
        name,
        lambda: load_proposals_json(json_file, image_root),
    )
    MetadataCatalog.get(name).set(
        json_file=json_file,
        image_root=image_root,
        evaluator_type="proposals",
        thing_classes=[CATEGORY["name"]],
        is_proposals=True,
    )


def register_coco_as_proposals(name: str, json_file: str, image_root: str) -> None:
    """Registers a labelled COCO json whose ground-truth boxes serve as proposals (no labels)."""
    register_proposals(name, json_file, image_root)


def register_coco(name: str, json_file: str, image_root: str) -> str:
    """Registers a labelled COCO json with Detectron2 unless ``name`` exists; returns ``name``.

    Configs call it through ``LazyCall`` (``names=L(register_coco)(name=..., json_file=...,
    image_root=...)``) so that datasets outside Detectron2's builtin list need no extra code.

    Raises:
        ProposalsError: when the json is a proposals file (fine-tuning needs labels).
    """
    if name in DatasetCatalog.list():
        return name
    try:
        with open(json_file) as f:
            cats = json.load(f).get("categories") or []
    except (OSError, json.JSONDecodeError) as e:
        raise ProposalsError(f"{json_file}: cannot read the dataset json ({e})") from e
    if is_proposals_categories(cats):
        raise ProposalsError(
            f"{json_file}: a proposals json has no labels; it is for pre-training, not for "
            f"fine-tuning or evaluation (dataset {name!r})"
        )
    register_coco_instances(name, {}, json_file, image_root)
    return name


def is_proposals_dataset(name: str) -> bool:
    """Whether a registered dataset holds proposals (no labels)."""
    meta = MetadataCatalog.get(name)
    if meta.get("is_proposals", False):
        return True
    json_file = meta.get("json_file", None)
    if json_file and os.path.isfile(json_file):
        with open(json_file) as f:
            cats = json.load(f).get("categories") or []
        return is_proposals_categories(cats)
    return False


def cluster_categories(categories: List[Dict[str, Any]]) -> Optional[int]:
    """K when a COCO json's ``categories`` are the cluster pseudo-labels ``cluster_1 .. cluster_K``
    with ids 1..K (``tools/cluster_proposals.py``), else None."""
    cats = categories or []
    expected = [(i + 1, f"cluster_{i + 1}") for i in range(len(cats))]
    ok = cats and [(c.get("id"), c.get("name")) for c in cats] == expected
    return len(cats) if ok else None


def check_cluster_labels(
    json_file: str, *, num_classes: int, num_queries: int, max_proposals: Optional[int]
) -> None:
    """Refuses, before training, a proposals json that DETR pre-training cannot learn from.

    DETR pre-training reads the proposals' cluster pseudo-labels as its classes and matches them
    one-to-one to its queries, so the json must hold ``num_classes`` clusters
    (``tools/cluster_proposals.py``) and no image may give more proposals than there are queries.

    Args:
        json_file: the pre-training json (``dataloader.train.dataset.json_file``).
        num_classes: the detector's classes (``model.detector.num_classes``).
        num_queries: its object queries (``model.detector.num_queries``).
        max_proposals: the loader's cap on proposals per image
            (``dataloader.train.mapper.max_proposals``), None for none.

    Raises:
        ProposalsError: naming the json and the problem: not clustered (every box would train as
            class 0), another number of clusters than classes (a cluster id >= ``num_classes``
            trains as "no object", a larger one fails in the loss), or more proposals per image
            than queries (the extra ones would never be matched).
    """
    data = read_proposals_json(json_file)
    cats = data.get("categories") or []
    k = cluster_categories(cats)
    if k is None:
        raise ProposalsError(
            f"{json_file}: its categories {[c.get('name') for c in cats][:3]} are not cluster "
            "pseudo-labels (cluster_1 .. cluster_K): DETR pre-training would train every box as "
            f"class 0; cluster it first (tools/cluster_proposals.py --num-clusters {num_classes})"
        )
    if k != num_classes:
        raise ProposalsError(
            f"{json_file}: {k} clusters but model.detector.num_classes={num_classes} ("
            + (
                f"cluster ids from {num_classes} up would train as 'no object' or fail"
                if k > num_classes
                else f"{num_classes - k} classes would have no box"
            )
            + f"); set model.detector.num_classes={k}"
        )
    counts = Counter(a["image_id"] for a in data["annotations"] if not a.get("iscrowd", 0))
    if not counts:
        return
    image, most = counts.most_common(1)[0]
    read = most if max_proposals is None else min(most, max_proposals)
    if read > num_queries:
        raise ProposalsError(
            f"{json_file}: image {image} gives {read} proposals (dataloader.train.mapper."
            f"max_proposals={max_proposals}) but the detector has {num_queries} queries: "
            f"{read - num_queries} would never be matched; set "
            f"dataloader.train.mapper.max_proposals={num_queries} or fewer (the reference reads "
            "the first 50 proposals with 100 queries)"
        )


def is_proposals_categories(categories: List[Dict[str, Any]]) -> bool:
    """Whether a COCO json's ``categories`` list is that of a proposals file (``selective_search``
    alone, or cluster pseudo-labels): boxes without human labels."""
    names = [c.get("name") for c in categories or []]
    return names == [CATEGORY["name"]] or cluster_categories(categories) is not None
