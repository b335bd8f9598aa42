"""Pictures of proposals and of the two pre-training views, drawn with Detectron2's Visualizer."""

from __future__ import annotations

import os
from typing import Dict, Optional, Sequence

import numpy as np
from detectron2.utils.colormap import colormap
from detectron2.utils.visualizer import Visualizer

__all__ = ["id_colors", "draw_boxes", "draw_two_views", "save_picture"]

_PALETTE = colormap(rgb=True, maximum=1)


def id_colors(ids: Sequence[int]):
    """A fixed colour per id (so that one proposal has the same colour in every picture)."""
    return [tuple(_PALETTE[int(i) % len(_PALETTE)]) for i in ids]


def draw_boxes(
    image_rgb: np.ndarray,
    boxes_xyxy: np.ndarray,
    ids: Optional[Sequence[int]] = None,
    labels: Optional[Sequence[str]] = None,
    colors: Optional[Sequence] = None,
) -> np.ndarray:
    """Draws boxes on an image.

    Args:
        image_rgb: (H, W, 3) uint8 RGB image.
        boxes_xyxy: (N, 4) boxes in pixels.
        ids: (N,) ids that choose the colours (default 0..N-1).
        labels: (N,) texts drawn at the boxes (default: the ids).
        colors: (N,) RGB colours in [0, 1] (default: one per id).

    Returns:
        (H, W, 3) uint8 RGB picture.
    """
    boxes_xyxy = np.asarray(boxes_xyxy, dtype=np.float32).reshape(-1, 4)
    ids = list(range(len(boxes_xyxy))) if ids is None else [int(i) for i in ids]
    labels = [str(i) for i in ids] if labels is None else list(labels)
    vis = Visualizer(image_rgb)
    colors = id_colors(ids) if colors is None else list(colors)
    out = vis.overlay_instances(boxes=boxes_xyxy, labels=labels, assigned_colors=colors)
    return out.get_image()


def draw_two_views(mapped: Dict, image_format: str = "BGR", gap: int = 8) -> np.ndarray:
    """Puts the two views of a :class:`~aligndet_d2.data.TwoViewMapper` output side by side.

    A proposal has the same colour and label (its id) in both views.

    Returns:
        (max(H1, H2), W1 + gap + W2, 3) uint8 RGB picture.
    """
    pictures = []
    for view in mapped["views"]:
        img = view["image"].permute(1, 2, 0).numpy()
        if image_format == "BGR":
            img = img[:, :, ::-1]
        inst = view["instances"]
        pictures.append(
            draw_boxes(
                np.ascontiguousarray(img), inst.gt_boxes.tensor.numpy(), inst.gt_ids.tolist()
            )
        )
    h = max(p.shape[0] for p in pictures)
    w = sum(p.shape[1] for p in pictures) + gap
    canvas = np.full((h, w, 3), 255, dtype=np.uint8)
    canvas[: pictures[0].shape[0], : pictures[0].shape[1]] = pictures[0]
    canvas[: pictures[1].shape[0], pictures[0].shape[1] + gap :] = pictures[1]
    return canvas


def save_picture(picture: np.ndarray, output_dir: str, image_file: str, suffix: str) -> str:
    """Saves an (H, W, 3) uint8 RGB picture as ``<output_dir>/<image stem>_<suffix>.png``.

    Returns:
        the path written.
    """
    from PIL import Image

    os.makedirs(output_dir, exist_ok=True)
    stem = os.path.splitext(os.path.basename(image_file))[0]
    out = os.path.join(output_dir, f"{stem}_{suffix}.png")
    Image.fromarray(picture).save(out)
    return out
