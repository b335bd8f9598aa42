"""Detections on new images from a LazyConfig and a trained checkpoint.

Detectron2's ``DefaultPredictor`` reads a yacs config; :class:`LazyPredictor` is the same for a
LazyConfig (a config file, or the ``config.yaml`` that ``train_net.py`` saves in its output
folder): the config's model with the checkpoint's weights (checked as ``train_net.py --eval-only``
checks them), the test loader's resize and image format, one image per call.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import instantiate
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from detectron2.data.detection_utils import read_image
from detectron2.structures import Instances

__all__ = ["LazyPredictor", "config_classes", "instances_to_coco", "predict_images"]


def config_classes(cfg) -> Optional[Dict[str, List]]:
    """The class names and COCO category ids the model of ``cfg`` was trained on, from its
    training dataset (else its test dataset): ``{"names": [...], "ids": [...]}`` in the model's
    class order, or None when the config names no dataset that can be read."""
    from .train_loop import _dataset_names

    for split in ("train", "test"):
        try:
            names = _dataset_names(cfg.dataloader.get(split))
        except Exception:  # a builtin dataset whose files are not on this machine
            continue
        for name in names:
            meta = MetadataCatalog.get(name)
            json_file = meta.get("json_file", None)
            if json_file and os.path.isfile(json_file):
                with open(json_file) as f:
                    cats = sorted(json.load(f)["categories"], key=lambda c: c["id"])
                return {"names": [c["name"] for c in cats], "ids": [c["id"] for c in cats]}
            if meta.get("thing_classes", None):
                n = len(meta.thing_classes)
                return {"names": list(meta.thing_classes), "ids": list(range(1, n + 1))}
    return None


class LazyPredictor:
    """A trained detector applied to one image at a time, as Detectron2's ``DefaultPredictor``.

    Args:
        cfg: a LazyConfig with ``model`` and ``dataloader.test.mapper`` (its ``augmentations``
            and ``image_format``).
        checkpoint: the weights (``model_final.pth`` of a fine-tune).
        device: where to run; default ``cfg.train.device`` (the CPU when CUDA is absent).
    """

    def __init__(self, cfg, checkpoint: str, device: Optional[str] = None):
        from .train_loop import check_init_checkpoint, resolve_device

        self.device = device or resolve_device(cfg)
        self.model = instantiate(cfg.model).to(self.device).eval()
        check_init_checkpoint(self.model, checkpoint)
        DetectionCheckpointer(self.model).load(checkpoint)
        mapper = cfg.dataloader.test.mapper
        self.augmentations = T.AugmentationList(
            [
                instantiate(a) if not isinstance(a, T.Augmentation) else a
                for a in mapper.augmentations
            ]
        )
        self.image_format = mapper.get("image_format", "BGR")

    def read(self, path: str) -> np.ndarray:
        """An image file as the model reads it: ``(H, W, 3)`` uint8 in the config's format, EXIF
        orientation applied."""
        return read_image(path, format=self.image_format)

    @torch.no_grad()
    def __call__(self, image: np.ndarray) -> Instances:
        """Detections of one image.

        Args:
            image: ``(H, W, 3)`` uint8 in the config's ``image_format`` (:meth:`read`).

        Returns:
            Instances in the image's size: ``pred_boxes`` (XYXY), ``scores``, ``pred_classes``.
        """
        height, width = image.shape[:2]
        aug = T.AugInput(image)
        self.augmentations(aug)
        tensor = torch.as_tensor(np.ascontiguousarray(aug.image.transpose(2, 0, 1)))
        inputs = {"image": tensor.to(self.device), "height": height, "width": width}
        return self.model([inputs])[0]["instances"].to("cpu")


def instances_to_coco(
    instances: Instances, image_id: Any, category_ids: Optional[List[int]] = None
) -> List[Dict[str, Any]]:
    """COCO results rows (``bbox`` XYWH) of one image's detections; class k becomes
    ``category_ids[k]`` (default k + 1)."""
    boxes = instances.pred_boxes.tensor.numpy().copy()
    boxes[:, 2:] -= boxes[:, :2]
    rows = []
    for box, score, cls in zip(
        boxes.tolist(), instances.scores.tolist(), instances.pred_classes.tolist()
    ):
        rows.append(
            {
                "image_id": image_id,
                "category_id": category_ids[cls] if category_ids else cls + 1,
                "bbox": [round(v, 2) for v in box],
                "score": round(score, 4),
            }
        )
    return rows


def predict_images(
    config_file: str,
    checkpoint: str,
    inputs: List[str],
    output: str,
    *,
    score: float = 0.5,
    opts: Optional[List[str]] = None,
    max_pictures: Optional[int] = None,
) -> dict:
    """Runs a trained model on image files and writes ``<output>/predictions.json`` (COCO
    results of every kept detection, with ``file_name``; ``image_id`` is the image's index in
    sorted order) and ``<output>/pictures/<image>.jpg`` (the detections of score >= ``score``,
    drawn by Detectron2's Visualizer; the first ``max_pictures``).

    Args:
        config_file: a config, or the ``config.yaml`` of a ``train_net.py`` run.
        checkpoint: the weights.
        inputs: image files.
        output: the output folder.
        score: the pictures' score threshold.
        opts: ``key=value`` overrides of the config.
        max_pictures: None draws every image.

    Returns:
        ``{"images", "detections" (score >= score), "per_class", "json", "pictures"}``.

    Raises:
        FileNotFoundError: the config or the checkpoint does not exist.
        OSError: an image cannot be read (naming it).
    """
    import cv2
    from detectron2.config import LazyConfig
    from detectron2.data.catalog import Metadata
    from detectron2.utils.visualizer import Visualizer

    from .overrides import apply_checked_overrides

    for f in (config_file, checkpoint):
        if not os.path.isfile(f):
            raise FileNotFoundError(f"{f}: no such file")
    cfg = apply_checked_overrides(LazyConfig.load(config_file), opts or [])
    classes = config_classes(cfg)
    predictor = LazyPredictor(cfg, checkpoint)
    meta = Metadata(thing_classes=classes["names"]) if classes else Metadata()
    pictures = os.path.join(output, "pictures")
    os.makedirs(pictures, exist_ok=True)
    rows, counts, drawn = [], Counter(), []
    for i, path in enumerate(sorted(inputs)):
        try:
            image = predictor.read(path)
        except Exception as e:
            raise OSError(f"{path}: cannot read the image ({e})") from e
        inst = predictor(image)
        for r in instances_to_coco(inst, i, classes["ids"] if classes else None):
            rows.append({**r, "file_name": os.path.basename(path)})
        kept = inst[inst.scores >= score]
        for c in kept.pred_classes.tolist():
            counts[classes["names"][c] if classes else str(c)] += 1
        if max_pictures is None or len(drawn) < max_pictures:
            rgb = image if predictor.image_format == "RGB" else image[:, :, ::-1]
            picture = Visualizer(rgb, meta).draw_instance_predictions(kept).get_image()
            out = os.path.join(pictures, os.path.splitext(os.path.basename(path))[0] + ".jpg")
            cv2.imwrite(out, picture[:, :, ::-1])
            drawn.append(out)
    json_path = os.path.join(output, "predictions.json")
    with open(json_path, "w") as f:
        json.dump(rows, f)
    return {
        "images": len(inputs),
        "detections": sum(counts.values()),
        "per_class": dict(counts.most_common()),
        "json": json_path,
        "pictures": drawn,
    }
