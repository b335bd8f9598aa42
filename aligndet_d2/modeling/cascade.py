"""Cascade R-CNN for box-domain pre-training (docs/DESIGN.md 2.4: the reference pre-trains HTC).

:class:`ContrastiveCascadeROIHeads` is Detectron2's ``CascadeROIHeads`` with each stage's
classifier replaced by a projection (:class:`~aligndet_d2.modeling.rcnn.ContrastiveOutputLayers`):

- Stage 1 samples 512 ROIs per image, 25 % foreground, from the RPN proposals plus the pseudo-GT
  boxes (the reference's HTC setting, not the R-CNN pre-training's foreground-only ROIs); stages 2
  and 3 take the previous stage's regressed boxes, as Cascade R-CNN does.
- Ids are shared across stages: every stage matches its own ROIs to the same pseudo-GT boxes (the
  proposals, with batch-unique ids equal in both views) at its own IoU (0.5 / 0.6 / 0.7); a ROI
  above it carries its box's id, the others are background (negatives only).
- The contrastive loss is computed per stage, the online stage k's embeddings against the momentum
  stage k's (each stage has its own head and projector), and summed with the stage weights (1, 0.5,
  0.25, as HTC weighs its stages), as are the stages' box losses.
- Box loss as the reference HTC's and Detectron2's ``CascadeROIHeads``: regression on the
  foreground ROIs, summed and divided by all ROIs of the stage, background included
  (``FastRCNNOutputLayers.box_reg_loss``), smooth L1 with beta 1 (the reference's
  ``SmoothL1Loss(beta=1.0)``; ``configs/common/capacity.py`` sets ``smooth_l1_beta``). Until
  this was fixed the loss was divided by the foreground ROIs only, 4x larger at stage 1's 25 %
  foreground cap and about 40x on an untrained pair, whose later stages have few foreground ROIs.
- Stages 2 and 3 drop the refined boxes that are empty after clipping to the image, as
  Detectron2's ``CascadeROIHeads`` does in training (an empty box has no IoU with any pseudo-GT
  and nothing to pool).
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import torch
from detectron2.layers import cat
from detectron2.modeling.proposal_generator.proposal_utils import add_ground_truth_to_proposals
from detectron2.modeling.roi_heads import CascadeROIHeads
from detectron2.modeling.sampling import subsample_labels
from detectron2.structures import Boxes, Instances, pairwise_iou

from ..utils.events import put_scalar
from .contrastive import BACKGROUND_ID, ContrastiveSamples

__all__ = ["ContrastiveCascadeROIHeads"]


class ContrastiveCascadeROIHeads(CascadeROIHeads):
    """Cascade ROI heads of pre-training: per stage, ROIs labelled with ids or background.

    Takes :class:`CascadeROIHeads`' arguments (``batch_size_per_image`` and
    ``positive_fraction`` sample stage 1) plus ``stage_loss_weights``.
    """

    def __init__(self, *, stage_loss_weights: Sequence[float] = (1.0, 0.5, 0.25), **kwargs):
        super().__init__(**kwargs)
        if len(stage_loss_weights) != self.num_cascade_stages:
            raise ValueError(
                f"stage_loss_weights={tuple(stage_loss_weights)}: one weight per stage "
                f"({self.num_cascade_stages})"
            )
        self.stage_loss_weights = tuple(float(w) for w in stage_loss_weights)

    @torch.no_grad()
    def _label(self, rois: List[Instances], targets: List[Instances], stage: int, sample: bool):
        """Matches ``rois`` (with ``proposal_boxes`` and ``is_gt``) to the pseudo-GT at the
        stage's IoU: adds ``gt_boxes`` and ``gt_ids`` (BACKGROUND_ID below it); samples
        ``batch_size_per_image`` at ``positive_fraction`` when ``sample``."""
        out = []
        for r, t in zip(rois, targets):
            device = r.proposal_boxes.device
            if len(t):
                iou = pairwise_iou(t.gt_boxes, r.proposal_boxes)
                matched, labels = self.proposal_matchers[stage](iou)
            else:
                matched = torch.zeros(len(r), dtype=torch.int64, device=device)
                labels = torch.zeros(len(r), dtype=torch.int8, device=device)
            fg = labels == 1
            if sample:
                # subsample_labels: class 0 is foreground, 1 (= num_classes) background.
                classes = torch.where(fg, 0, 1)
                pos, neg = subsample_labels(
                    classes, self.batch_size_per_image, self.positive_fraction, 1
                )
                keep = torch.cat([pos, neg])
                r, fg, matched = r[keep], fg[keep], matched[keep]
            r.gt_boxes = t.gt_boxes[matched] if len(t) else r.proposal_boxes.clone()
            ids = t.gt_ids[matched] if len(t) else matched
            r.gt_ids = torch.where(fg, ids, torch.full_like(matched, BACKGROUND_ID))
            out.append(r)
        return out

    @staticmethod
    def refined_rois(rois: List[Instances], boxes: List[torch.Tensor]) -> List[Instances]:
        """The next stage's ROIs: this stage's regressed boxes, detached, clipped to the image,
        the empty ones dropped (Detectron2's ``CascadeROIHeads`` in training).

        Args:
            rois: per image, this stage's ROIs (``is_gt`` is carried over).
            boxes: per image, (R_i, 4) regressed XYXY boxes of those ROIs.

        Returns:
            per image, ``Instances`` with ``proposal_boxes`` and ``is_gt``.
        """
        out = []
        for r, b in zip(rois, boxes):
            b = Boxes(b.detach())
            b.clip(r.image_size)
            keep = b.nonempty()
            out.append(Instances(r.image_size, proposal_boxes=b[keep], is_gt=r.is_gt[keep]))
        return out

    def box_loss(self, stage: int, rois: List[Instances], deltas: torch.Tensor) -> torch.Tensor:
        """Stage ``stage``'s box regression loss, unweighted by the stage weight.

        Args:
            stage: the stage index.
            rois: per image, the stage's ROIs with ``proposal_boxes``, ``gt_boxes`` and
                ``gt_ids`` (BACKGROUND_ID for background), R in all.
            deltas: (R, 4) class-agnostic deltas of the stage's predictor.

        Returns:
            The loss over the foreground ROIs divided by R (Detectron2's normaliser), times the
            predictor's ``loss_weight["loss_box_reg"]``.
        """
        predictor = self.box_predictor[stage]
        ids = cat([r.gt_ids for r in rois])
        # The predictor has one class (0); Detectron2 reads class num_classes (1) as background.
        classes = torch.where(ids >= 0, 0, 1)
        loss = predictor.box_reg_loss(
            cat([r.proposal_boxes.tensor for r in rois]),
            cat([r.gt_boxes.tensor for r in rois]),
            deltas,
            classes,
        )
        return loss * predictor.loss_weight.get("loss_box_reg", 1.0)

    def forward_pretrain(
        self,
        features: Dict[str, torch.Tensor],
        proposals: List[Instances],
        targets: List[Instances],
        with_losses: bool = True,
    ) -> Tuple[Dict[str, torch.Tensor], ContrastiveSamples]:
        """
        Args:
            features: FPN features.
            proposals: per image, RPN proposals.
            targets: per image, pseudo-GT ``Instances`` with ``gt_boxes`` and ``gt_ids``.
            with_losses: compute the box losses (the momentum branch does not need them).

        Returns:
            (losses, samples): ``loss_box_reg_stage<k>`` (weighted); the ROIs of every stage with
            their embeddings, ids, ``stage`` and, as the fixed set, the pseudo-GT boxes of stage 1.
        """
        feats = [features[f] for f in self.box_in_features]
        n_rpn = [len(p) for p in proposals]
        rois = add_ground_truth_to_proposals(targets, proposals)  # the GT boxes come last
        for r, n in zip(rois, n_rpn):
            r.is_gt = torch.arange(len(r), device=r.proposal_boxes.device) >= n
        rois = self._label(rois, targets, 0, sample=True)
        n = self.num_cascade_stages
        losses, samples = {}, []
        prev_boxes = None  # stage k refines the boxes stage k - 1 predicted
        for k in range(n):
            if k > 0:
                rois = self._label(self.refined_rois(rois, prev_boxes), targets, k, sample=False)
            x = self.box_pooler(feats, [r.proposal_boxes for r in rois])
            # Every stage back-propagates into the shared features: scale each by 1 / stages,
            # as Detectron2's CascadeROIHeads does.
            x = x / n + x.detach() * (1 - 1 / n)
            emb, deltas = self.box_predictor[k](self.box_head[k](x))
            ids = cat([r.gt_ids for r in rois])
            if with_losses:
                loss = self.box_loss(k, rois, deltas)
                losses[f"loss_box_reg_stage{k}"] = loss * self.stage_loss_weights[k]
            fixed = cat([r.is_gt for r in rois]) & (ids >= 0) & (k == 0)
            samples.append((emb, ids, fixed, torch.full_like(ids, k)))
            prev_boxes = self.box_predictor[k].predict_boxes((emb, deltas), rois)
            put_scalar(f"roi_head/num_fg_stage{k}", float((ids >= 0).sum()) / max(len(rois), 1))
        emb, ids, fixed, stage = (cat(list(x)) for x in zip(*samples))
        return losses, ContrastiveSamples(emb, ids, fixed, stage)
