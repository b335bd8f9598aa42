"""The two-view dataset mapper of box-domain pre-training (docs/DESIGN.md 2.2).

The image is read once; each view gets its own random resize, horizontal flip and one photometric
op. There is no crop, so every proposal is visible in both views, and no box is ever dropped in one
view only: both views' ``Instances`` hold the same boxes in the same order, with ``gt_ids`` holding
each box's index in the image's proposal list. A box under 1 px wide or high in either view (after
clipping) is dropped from both.
"""

from __future__ import annotations

import copy
import logging
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import Boxes, BoxMode, Instances
from PIL import Image, ImageEnhance, ImageOps

__all__ = [
    "PHOTOMETRIC_OPS",
    "PhotometricOpTransform",
    "RandomPhotometric",
    "TwoViewMapper",
    "photometric_op",
]

logger = logging.getLogger(__name__)

# The nine ops of docs/DESIGN.md 2.2, each chosen with probability 1/9, magnitude m in 1..9.
PHOTOMETRIC_OPS = (
    "identity",
    "autocontrast",
    "equalize",
    "solarize",
    "color",
    "contrast",
    "brightness",
    "sharpness",
    "posterize",
)
_ENHANCERS = {
    "color": ImageEnhance.Color,
    "contrast": ImageEnhance.Contrast,
    "brightness": ImageEnhance.Brightness,
    "sharpness": ImageEnhance.Sharpness,
}


def photometric_op(name: str, magnitude: int) -> Callable[[Image.Image], Image.Image]:
    """A PIL function for one of :data:`PHOTOMETRIC_OPS` at magnitude 1..9 (RGB images).

    Solarize uses threshold ``min(int(25.6 m), 255)``; the enhance ops use factor ``0.1 + 0.18 m``;
    posterize keeps ``4 - int(0.4 m)`` bits.
    """
    m = int(magnitude)
    if name == "identity":
        return lambda img: img
    if name == "autocontrast":
        return ImageOps.autocontrast
    if name == "equalize":
        return ImageOps.equalize
    if name == "solarize":
        threshold = min(int(25.6 * m), 255)
        return lambda img: ImageOps.solarize(img, threshold)
    if name in _ENHANCERS:
        factor = 0.1 + 0.18 * m
        return lambda img: _ENHANCERS[name](img).enhance(factor)
    if name == "posterize":
        bits = 4 - int(0.4 * m)
        return lambda img: ImageOps.posterize(img, bits)
    raise ValueError(f"unknown photometric op {name!r} (allowed: {PHOTOMETRIC_OPS})")


class PhotometricOpTransform(T.PILColorTransform):
    """One of :data:`PHOTOMETRIC_OPS` at a magnitude, as a Detectron2 transform (boxes unchanged).

    Keeps ``name`` and ``magnitude``, so that the op a view received can be read back.
    """

    def __init__(self, name: str, magnitude: int):
        super().__init__(photometric_op(name, magnitude))
        self.name = name
        self.magnitude = int(magnitude)


class RandomPhotometric(T.Augmentation):
    """Applies one photometric op chosen uniformly, with a magnitude drawn uniformly from a range.

    Boxes are left unchanged (the transform is a :class:`PhotometricOpTransform`, a
    :class:`detectron2.data.transforms.PILColorTransform`). Expects a uint8 RGB image.
    """

    def __init__(self, ops: Sequence[str] = PHOTOMETRIC_OPS, magnitude_range=(1, 9)):
        super().__init__()
        for op in ops:
            photometric_op(op, 1)  # validates the name
        lo, hi = magnitude_range
        if not (1 <= lo <= hi <= 9):
            raise ValueError(f"magnitude_range={magnitude_range} (allowed: 1 <= lo <= hi <= 9)")
        self.ops = tuple(ops)
        self.magnitude_range = (int(lo), int(hi))

    def get_transform(self, image):
        op = self.ops[np.random.randint(len(self.ops))]
        m = np.random.randint(self.magnitude_range[0], self.magnitude_range[1] + 1)
        if op == "identity":
            return T.NoOpTransform()
        return PhotometricOpTransform(op, m)


class TwoViewMapper:
    """Maps a proposals dataset dict to two augmented views with aligned proposal ids.

    Works with ``build_detection_train_loader(mapper=TwoViewMapper(...))`` and aspect-ratio grouping
    (the output keeps the dataset dict's ``height`` / ``width``).

    Output dict: the input's ``file_name``, ``image_id``, ``height``, ``width``, ``views``: a list
    of two dicts, each ``{"image": (C, H_v, W_v) uint8 tensor, "instances": Instances}`` whose
    instances hold ``gt_boxes`` (N boxes in the view's pixels), ``gt_ids`` ((N,) int64, the
    proposal's index in the image's list, identical in both views) and ``gt_classes`` ((N,) the
    annotations' ``category_id``: 0 for plain proposals, the cluster for clustered ones), and
    ``degenerate_boxes``: how many proposals were dropped from both views for being under 1 px wide
    or high in one of them after clipping.
    """

    def __init__(
        self,
        *,
        short_edge_lengths: Sequence[int] = (640, 672, 704, 736, 768, 800),
        max_size: int = 1333,
        flip_prob: float = 0.5,
        photometric_ops: Sequence[str] = PHOTOMETRIC_OPS,
        magnitude_range: Tuple[int, int] = (1, 9),
        image_format: str = "BGR",
        max_proposals: Optional[int] = None,
    ):
        """
        Args:
            short_edge_lengths: each view's short side is drawn from these.
            max_size: cap on each view's long side.
            flip_prob: probability of a horizontal flip, per view.
            photometric_ops: the ops one is drawn from, per view (empty: no photometric op).
            magnitude_range: inclusive range of op magnitudes.
            image_format: the model's input format ("BGR" or "RGB"); ops run on RGB either way.
            max_proposals: keep only the first k proposals of each image (file order), or None.
        """
        if max_proposals is not None and (
            isinstance(max_proposals, bool)
            or not isinstance(max_proposals, int)
            or max_proposals < 1
        ):
            # A command-line override of "None" arrives as the string 'None' (Hydra spells it null).
            raise ValueError(
                f"max_proposals={max_proposals!r} (allowed: an integer >= 1, or None; on the "
                "command line: dataloader.train.mapper.max_proposals=null)"
            )
        if image_format not in ("BGR", "RGB"):
            raise ValueError(f"image_format={image_format!r} (allowed: 'BGR', 'RGB')")
        augs: List[T.Augmentation] = [
            T.ResizeShortestEdge(list(short_edge_lengths), max_size, sample_style="choice")
        ]
        if flip_prob > 0:
            # The flip mirrors the unpadded view (the model pads later, in ImageList): the reference
            # flips the padded image and then shifts the boxes back, which this avoids.
            augs.append(T.RandomFlip(prob=flip_prob, horizontal=True, vertical=False))
        if photometric_ops:
            augs.append(RandomPhotometric(photometric_ops, magnitude_range))
        self.augmentations = T.AugmentationList(augs)
        self.image_format = image_format
        self.max_proposals = max_proposals
        self._warned = False

    def _proposal_boxes(self, dataset_dict: Dict[str, Any]) -> Tuple[np.ndarray, torch.Tensor]:
        """(N, 4) XYXY boxes and (N,) int64 classes (cluster ids, or 0) of the first proposals."""
        anns = dataset_dict["annotations"]
        if self.max_proposals is not None:
            anns = anns[: self.max_proposals]
        boxes = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in anns]
        classes = torch.tensor([a.get("category_id", 0) for a in anns], dtype=torch.int64)
        return np.asarray(boxes, dtype=np.float32).reshape(-1, 4), classes

    def __call__(self, dataset_dict: Dict[str, Any]) -> Dict[str, Any]:
        dataset_dict = copy.copy(dataset_dict)
        file_name = dataset_dict["file_name"]
        try:
            image = utils.read_image(file_name, format="RGB")
        except Exception as e:
            raise RuntimeError(
                f"{file_name}: cannot read the image ({type(e).__name__}: {e})"
            ) from e
        utils.check_image_size(dataset_dict, image)
        boxes, classes = self._proposal_boxes(dataset_dict)
        views = [self._view(image, boxes) for _ in range(2)]
        # A box that clipping (or a downscale) leaves under 1 px wide or high is dropped in both
        # views together, so that ids stay aligned: with Detectron2's low-quality matches, a
        # zero-area ground-truth box would label every anchor with its id.
        keep = torch.ones(len(boxes), dtype=torch.bool)
        for _, b in views:
            keep &= ((b.tensor[:, 2:] - b.tensor[:, :2]) >= 1).all(dim=1)
        n_dropped = int((~keep).sum())
        if n_dropped and not self._warned:
            logger.warning(
                f"{file_name}: {n_dropped} of {len(boxes)} proposals are under 1 px wide or high "
                "in a view after resizing and clipping; they are dropped from both views (counted "
                "in pretrain/degenerate_boxes; this warning is shown once per process)"
            )
            self._warned = True
        ids = torch.arange(len(boxes), dtype=torch.int64)[keep]
        out = {k: dataset_dict[k] for k in ("file_name", "image_id", "height", "width")}
        out["views"] = [self._view_dict(img, b[keep], ids, classes[keep]) for img, b in views]
        out["degenerate_boxes"] = n_dropped
        return out

    def _view(self, image: np.ndarray, boxes: np.ndarray) -> Tuple[np.ndarray, Boxes]:
        """One view: the augmented image in the model's format and its boxes, clipped."""
        aug_input = T.AugInput(image, boxes=boxes)
        self.augmentations(aug_input)
        img = aug_input.image
        if self.image_format == "BGR":
            img = img[:, :, ::-1]
        b = Boxes(torch.as_tensor(aug_input.boxes, dtype=torch.float32).reshape(-1, 4))
        b.clip(img.shape[:2])
        return img, b

    @staticmethod
    def _view_dict(
        img: np.ndarray, boxes: Boxes, ids: torch.Tensor, classes: torch.Tensor
    ) -> Dict[str, Any]:
        inst = Instances(img.shape[:2])
        inst.gt_boxes = boxes
        inst.gt_ids = ids.clone()
        inst.gt_classes = classes.clone()
        return {
            "image": torch.as_tensor(np.ascontiguousarray(img.transpose(2, 0, 1))),
            "instances": inst,
        }
