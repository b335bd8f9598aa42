"""DETR's set loss: classification with a down-weighted no-object class, L1 and GIoU on matched
boxes, on every decoder layer (Carion et al. 2020, section 3.1 and appendix A.2)."""

from __future__ import annotations

from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from detectron2.utils import comm
from torch import nn
from torchvision.ops import box_convert, generalized_box_iou

from .matcher import HungarianMatcher

__all__ = ["SetCriterion"]


class SetCriterion(nn.Module):
    """Hungarian-matched losses of DETR's outputs, summed over the decoder layers.

    Args:
        num_classes: K; class index K is "no object".
        matcher: the class + box matcher.
        eos_coef: weight of the no-object class in the cross-entropy (DETR: 0.1; AlignDet's
            pre-training: 1.0).
        class_normalizer: what the cross-entropy summed over all queries is divided by:
            "weights", the sum of the queries' class weights (a weighted mean, as DETR does), or
            "matched", the number of matched queries of the process (at least 1), as the
            reference AlignDet's DETR pre-training head does (mmdetection's ``DETRHead`` with
            ``bg_cls_weight`` 0). With a no-object weight of 1 the second is ``Q / matched``
            times the first (1.5x for 30 queries and 20 proposals).
        loss_class: weight of the cross-entropy (1).
        loss_bbox: weight of the L1 loss (5).
        loss_giou: weight of the GIoU loss (2).
    """

    def __init__(
        self,
        *,
        num_classes: int,
        matcher: HungarianMatcher,
        eos_coef: float = 0.1,
        class_normalizer: str = "weights",
        loss_class: float = 1.0,
        loss_bbox: float = 5.0,
        loss_giou: float = 2.0,
    ):
        super().__init__()
        if class_normalizer not in ("weights", "matched"):
            raise ValueError(
                f"class_normalizer={class_normalizer!r} (allowed: 'weights', 'matched')"
            )
        self.class_normalizer = class_normalizer
        self.num_classes = num_classes
        self.matcher = matcher
        self.weights = {"loss_ce": loss_class, "loss_bbox": loss_bbox, "loss_giou": loss_giou}
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = eos_coef
        self.register_buffer("empty_weight", empty_weight, persistent=False)

    def layer_losses(
        self,
        logits: torch.Tensor,
        boxes: torch.Tensor,
        tgt_labels: List[torch.Tensor],
        tgt_boxes: List[torch.Tensor],
        num_boxes: float,
    ) -> Tuple[Dict[str, torch.Tensor], List[Tuple[torch.Tensor, torch.Tensor]]]:
        """Weighted losses of one decoder layer and its matching.

        Args:
            logits: (B, Q, K + 1).
            boxes: (B, Q, 4) normalised (cx, cy, w, h).
            tgt_labels, tgt_boxes: per image, (T_i,) classes and (T_i, 4) normalised boxes.
            num_boxes: the normaliser, targets per process averaged over processes.
        """
        idx = self.matcher(boxes, tgt_boxes, logits, tgt_labels)
        b = torch.cat([torch.full_like(q, i) for i, (q, _) in enumerate(idx)]).to(logits.device)
        q = torch.cat([q for q, _ in idx]).to(logits.device)
        target_classes = torch.full(
            logits.shape[:2], self.num_classes, dtype=torch.int64, device=logits.device
        )
        target_classes[b, q] = torch.cat([lab[t] for lab, (_, t) in zip(tgt_labels, idx)])
        logits_t = logits.float().transpose(1, 2)
        if self.class_normalizer == "weights":
            loss_ce = F.cross_entropy(logits_t, target_classes, self.empty_weight)
        else:
            loss_ce = F.cross_entropy(
                logits_t, target_classes, self.empty_weight, reduction="sum"
            ) / max(len(q), 1)
        src = boxes[b, q].float()
        tgt = torch.cat([tb[t] for tb, (_, t) in zip(tgt_boxes, idx)]).float()
        loss_bbox = F.l1_loss(src, tgt, reduction="none").sum() / num_boxes
        giou = torch.diag(
            generalized_box_iou(
                box_convert(src, "cxcywh", "xyxy"), box_convert(tgt, "cxcywh", "xyxy")
            )
        )
        loss_giou = (1 - giou).sum() / num_boxes
        raw = {"loss_ce": loss_ce, "loss_bbox": loss_bbox, "loss_giou": loss_giou}
        return {k: v * self.weights[k] for k, v in raw.items()}, idx

    def forward(
        self,
        logits: torch.Tensor,
        boxes: torch.Tensor,
        tgt_labels: List[torch.Tensor],
        tgt_boxes: List[torch.Tensor],
    ) -> Dict[str, torch.Tensor]:
        """
        Args:
            logits: (L, B, Q, K + 1), every decoder layer's class logits (the last is the output).
            boxes: (L, B, Q, 4).
            tgt_labels, tgt_boxes: as :meth:`layer_losses`.

        Returns:
            ``loss_ce``, ``loss_bbox``, ``loss_giou`` of the last layer and ``..._<l>`` of each
            earlier layer ``l`` (auxiliary losses), weighted.
        """
        n = torch.tensor([float(sum(len(t) for t in tgt_labels))], device=logits.device)
        if comm.get_world_size() > 1:
            torch.distributed.all_reduce(n)
        num_boxes = max(n.item() / comm.get_world_size(), 1.0)
        losses = {}
        last = len(logits) - 1
        for layer in range(len(logits)):
            out, _ = self.layer_losses(
                logits[layer], boxes[layer], tgt_labels, tgt_boxes, num_boxes
            )
            suffix = "" if layer == last else f"_{layer}"
            losses.update({k + suffix: v for k, v in out.items()})
        return losses
