"""Class-agnostic recall of box proposals against ground-truth boxes.

Each ground-truth box counts as recalled at IoU threshold ``t`` when one of the first ``k``
proposals of its image overlaps it by at least ``t`` (its best proposal; the proposal is not
reserved for one box, as in Hosang et al., "What makes for effective detection proposals?",
TPAMI 2016). Average recall (AR) is the mean of the recall over the thresholds 0.5:0.05:0.95.
"""

from __future__ import annotations

from typing import Dict, Sequence

import torch
from torchvision.ops import box_iou

__all__ = ["IOU_THRESHOLDS", "proposal_recall"]

# COCO's 10 thresholds 0.5, 0.55, ..., 0.95.
IOU_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))


def proposal_recall(
    gt_boxes: Sequence[torch.Tensor],
    proposals: Sequence[torch.Tensor],
    ks: Sequence[int] = (10, 32, 100),
) -> Dict[str, float]:
    """Recall of the first ``k`` proposals of each image, over all images.

    Args:
        gt_boxes: per image, ``(G, 4)`` ground-truth boxes, XYXY absolute.
        proposals: per image (same order), ``(P, 4)`` proposals, XYXY absolute, best first.
        ks: the numbers of proposals per image to measure.

    Returns:
        ``{"AR@k": ..., "R@k/IoU0.5": ..., "num_gt": G_total}`` in percent: AR over IoU
        0.5:0.95 and recall at IoU 0.5 for each ``k``.
    """
    if len(gt_boxes) != len(proposals):
        raise ValueError(
            f"proposal_recall: {len(gt_boxes)} images of ground truth, {len(proposals)} of "
            "proposals"
        )
    thresholds = torch.tensor(IOU_THRESHOLDS)
    # (num_gt_total, len(ks)): the best IoU of each ground-truth box among the first k proposals.
    best = []
    for gt, props in zip(gt_boxes, proposals):
        gt = torch.as_tensor(gt, dtype=torch.float32).reshape(-1, 4)
        props = torch.as_tensor(props, dtype=torch.float32).reshape(-1, 4)
        row = torch.zeros(len(gt), len(ks))
        if len(gt) and len(props):
            iou = box_iou(gt, props)  # (G, P)
            for j, k in enumerate(ks):
                row[:, j] = iou[:, :k].max(dim=1).values
        best.append(row)
    best = torch.cat(best) if best else torch.zeros(0, len(ks))
    n = len(best)
    out: Dict[str, float] = {"num_gt": n}
    for j, k in enumerate(ks):
        hit = best[:, j, None] >= thresholds[None, :]  # (num_gt, 10)
        rec = hit.float().mean(dim=0) * 100 if n else torch.zeros(len(thresholds))
        out[f"AR@{k}"] = float(rec.mean())
        out[f"R@{k}/IoU0.5"] = float(rec[0])
    return out
