"""Detectron2's FCOS with its losses in float32, so that it trains under AMP.

Under autocast the head's box deltas are half precision while the ground-truth boxes are float32,
and fvcore's GIoU loss (which Detectron2's FCOS calls) writes one into the other with an in-place
index: ``RuntimeError: Index put requires the source and destination dtypes match``, at the first
step of an AMP fine-tune on a GPU (seen with benchmarks/gpu_check.py; fvcore's own pull request
#114 proposes the same cast). The losses gain nothing from half precision anyway.
"""

from __future__ import annotations

from typing import Dict, List

import torch
from detectron2.modeling.meta_arch import FCOS
from detectron2.structures import Boxes

__all__ = ["AMPSafeFCOS"]


class AMPSafeFCOS(FCOS):
    """:class:`detectron2.modeling.FCOS` whose losses take float32 predictions.

    Same parameters and state dict as FCOS (checkpoints load either way); the forward and inference
    are FCOS's; outside autocast the losses are identical.
    """

    def losses(
        self,
        anchors: List[Boxes],
        pred_logits: List[torch.Tensor],
        gt_labels: List[torch.Tensor],
        pred_anchor_deltas: List[torch.Tensor],
        gt_boxes: List[torch.Tensor],
        pred_centerness: List[torch.Tensor],
    ) -> Dict[str, torch.Tensor]:
        """FCOS's losses; each prediction list holds per-level (N, R_l, K) tensors, cast to
        float32 here (K: classes, 4 deltas or 1 centerness)."""
        return super().losses(
            anchors,
            [x.float() for x in pred_logits],
            gt_labels,
            [x.float() for x in pred_anchor_deltas],
            gt_boxes,
            [x.float() for x in pred_centerness],
        )
