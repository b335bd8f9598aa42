"""Pascal VOC folders as Detectron2 datasets that both the VOC and the COCO evaluators can score.

Detectron2's ``register_pascal_voc`` reads a ``VOC20xx`` folder (``Annotations/``, ``JPEGImages/``,
``ImageSets/Main/<split>.txt``) and its ``PascalVOCDetectionEvaluator`` scores exactly the images of
``<split>.txt``. :func:`register_voc` adds what the COCO-style evaluators need, a COCO json of the
same images (Detectron2's own conversion, cached), and :func:`voc_subset` makes a folder whose split
file lists a chosen part of the images (a fixed evaluation subset, a held-out part of ``train``)
with the annotations and images linked, not copied.
"""

from __future__ import annotations

import hashlib
import os
from typing import Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import convert_to_coco_json
from detectron2.data.datasets.pascal_voc import register_pascal_voc

__all__ = ["VOCError", "register_voc", "voc_subset", "read_voc_split"]

_COCO_CACHE = os.path.join("output", "voc_coco_format")


class VOCError(ValueError):
    """A VOC folder or split file is missing or wrong; the message names the path."""


def _split_file(dirname: str, split: str) -> str:
    return os.path.join(dirname, "ImageSets", "Main", f"{split}.txt")


def read_voc_split(dirname: str, split: str) -> list:
    """The image ids (file stems, e.g. ``"000005"``) of ``<dirname>/ImageSets/Main/<split>.txt``.

    Raises:
        VOCError: the split file is missing or lists no image.
    """
    path = _split_file(dirname, split)
    if not os.path.isfile(path):
        raise VOCError(f"{path}: no such VOC split file (is {dirname!r} a VOC20xx folder?)")
    with open(path) as f:
        ids = [line.split()[0] for line in f if line.strip()]
    if not ids:
        raise VOCError(f"{path}: the split lists no image")
    return ids


def register_voc(
    name: str, dirname: str, split: str, year: int = 2007, coco_cache_dir: str = _COCO_CACHE
) -> str:
    """Registers a VOC split as the Detectron2 dataset ``name`` unless it exists; returns ``name``.

    Configs call it through ``LazyCall`` (``names=L(register_voc)(name=..., dirname=...,
    split=...)``). The metadata has what ``PascalVOCDetectionEvaluator`` needs (``dirname``,
    ``split``, ``year``, VOC's 20 ``thing_classes``) and a ``json_file``: the split converted to
    COCO format by Detectron2 (written once under ``coco_cache_dir``, its name keyed by the split's
    image list), so that ``COCOEvaluator`` and the class-agnostic evaluator score the same images.
    The COCO conversion keeps ``difficult`` boxes as ordinary ground truth, as Detectron2's VOC
    loader does; only the VOC evaluator ignores them.

    A name Detectron2 registers itself (``voc_2007_test`` from ``$DETECTRON2_DATASETS``) keeps its
    folder and gets the COCO json only.

    Raises:
        VOCError: the folder has no ``ImageSets/Main/<split>.txt``, or its annotations or images
            folder is missing.
    """
    meta = MetadataCatalog.get(name)
    if name in DatasetCatalog.list():
        if meta.get("json_file", None) or not meta.get("dirname", None):
            return name
        # Detectron2's builtin VOC names come without a COCO json: add one.
        dirname, split, year = meta.dirname, meta.split, meta.year
    ids = read_voc_split(dirname, split)
    for sub in ("Annotations", "JPEGImages"):
        if not os.path.isdir(os.path.join(dirname, sub)):
            raise VOCError(f"{os.path.join(dirname, sub)}: missing (not a VOC20xx folder)")
    missing = [
        i for i in ids if not os.path.isfile(os.path.join(dirname, "Annotations", i + ".xml"))
    ]
    if missing:
        raise VOCError(
            f"{_split_file(dirname, split)}: {len(missing)} of its {len(ids)} images have no "
            f"annotation file under {os.path.join(dirname, 'Annotations')} (first: {missing[:3]})"
        )
    if name not in DatasetCatalog.list():
        register_pascal_voc(name, dirname, split, year)
    key = hashlib.sha1("\n".join([os.path.abspath(dirname), *ids]).encode()).hexdigest()[:12]
    json_file = os.path.join(coco_cache_dir, f"{name}_{key}_coco_format.json")
    # Detectron2 writes it atomically and reuses it when present.
    convert_to_coco_json(name, json_file)
    meta.set(evaluator_type="pascal_voc", json_file=json_file)
    return name


def voc_subset(voc_dir: str, output_dir: str, split: str, image_ids: Sequence[str]) -> str:
    """A VOC folder for a part of ``voc_dir``'s images; returns its path (``output_dir``).

    ``output_dir/Annotations`` and ``output_dir/JPEGImages`` are symbolic links to ``voc_dir``'s;
    ``output_dir/ImageSets/Main/<split>.txt`` lists ``image_ids`` in the given order. Calling it
    again with the same arguments changes nothing.

    Raises:
        VOCError: ``voc_dir`` is not a VOC folder, an id has no annotation file, or
            ``output_dir`` already holds a different ``<split>.txt``.
    """
    if not image_ids:
        raise VOCError(f"{output_dir}: no images for the VOC split {split!r}")
    for sub in ("Annotations", "JPEGImages"):
        if not os.path.isdir(os.path.join(voc_dir, sub)):
            raise VOCError(f"{os.path.join(voc_dir, sub)}: missing (not a VOC20xx folder)")
    missing = [
        i for i in image_ids if not os.path.isfile(os.path.join(voc_dir, "Annotations", f"{i}.xml"))
    ]
    if missing:
        raise VOCError(
            f"{voc_dir}: no annotation file for {len(missing)} images (first: {missing[:3]})"
        )
    os.makedirs(os.path.join(output_dir, "ImageSets", "Main"), exist_ok=True)
    for sub in ("Annotations", "JPEGImages"):
        link = os.path.join(output_dir, sub)
        if not os.path.lexists(link):
            os.symlink(os.path.abspath(os.path.join(voc_dir, sub)), link)
    text = "".join(f"{i}\n" for i in image_ids)
    path = _split_file(output_dir, split)
    if os.path.isfile(path):
        with open(path) as f:
            if f.read() != text:
                raise VOCError(f"{path}: exists with other images; choose another split name")
    else:
        with open(path + ".tmp", "w") as f:
            f.write(text)
        os.replace(path + ".tmp", path)
    return output_dir
