"""Hungarian matching of predictions to targets (DETR), with scipy's ``linear_sum_assignment``."""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import nn
from torchvision.ops import box_convert, generalized_box_iou

__all__ = ["HungarianMatcher"]


class HungarianMatcher(nn.Module):
    """One-to-one assignment minimising ``w_class * -p(class) + w_bbox * L1 + w_giou * -GIoU``.

    With ``cost_class=0`` the class scores are never read (AlignDet's instance match of proposals to
    queries: box costs only, docs/DESIGN.md 2.4; the released code indexed class probabilities by
    instance id).

    Args:
        cost_class: weight of the negative class probability.
        cost_bbox: weight of the L1 distance of normalised (cx, cy, w, h) boxes.
        cost_giou: weight of the negative generalised IoU.
    """

    def __init__(self, cost_class: float = 1.0, cost_bbox: float = 5.0, cost_giou: float = 2.0):
        super().__init__()
        if cost_class == cost_bbox == cost_giou == 0:
            raise ValueError("HungarianMatcher: all costs are 0")
        self.cost_class, self.cost_bbox, self.cost_giou = cost_class, cost_bbox, cost_giou

    @torch.no_grad()
    def forward(
        self,
        pred_boxes: torch.Tensor,
        tgt_boxes: List[torch.Tensor],
        pred_logits: Optional[torch.Tensor] = None,
        tgt_labels: Optional[List[torch.Tensor]] = None,
    ) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """
        Args:
            pred_boxes: (B, Q, 4) predicted (cx, cy, w, h) in [0, 1].
            tgt_boxes: per image, (T_i, 4) target (cx, cy, w, h) in [0, 1].
            pred_logits: (B, Q, K + 1) class logits; needed only when ``cost_class`` is not 0.
            tgt_labels: per image, (T_i,) int64 classes; as ``pred_logits``.

        Returns:
            per image, (query indices, target indices), int64, ``min(Q, T_i)`` pairs.
        """
        from scipy.optimize import linear_sum_assignment

        out = []
        for i, tb in enumerate(tgt_boxes):
            pb = pred_boxes[i].float()
            tb = tb.float()
            if len(tb) == 0:
                empty = torch.zeros(0, dtype=torch.int64)
                out.append((empty, empty))
                continue
            cost = self.cost_bbox * torch.cdist(pb, tb, p=1)
            cost = cost - self.cost_giou * generalized_box_iou(
                box_convert(pb, "cxcywh", "xyxy"), box_convert(tb, "cxcywh", "xyxy")
            )
            if self.cost_class:
                prob = pred_logits[i].float().softmax(-1)
                cost = cost - self.cost_class * prob[:, tgt_labels[i]]
            q, t = linear_sum_assignment(cost.cpu().numpy())
            out.append(
                (torch.as_tensor(q, dtype=torch.int64), torch.as_tensor(t, dtype=torch.int64))
            )
        return out
