"""Faster/Mask R-CNN for box-domain pre-training (docs/DESIGN.md 2.4).

- :class:`AlignDetRCNN`: Detectron2's ``GeneralizedRCNN`` with a pre-training forward that returns
  the regression losses, the ROI embeddings and their instance ids.
- :class:`ContrastiveROIHeads`: ROI candidates are the RPN proposals plus the pseudo-GT boxes; only
  those with IoU >= 0.5 to a pseudo-GT box are kept (foreground only, no negatives), at most
  ``batch_size_per_image`` per image, each labelled with the batch-unique id of its box.
- :class:`ContrastiveOutputLayers`: a projection MLP replaces the classifier; box regression is
  class-agnostic.

The RPN is Detectron2's own, configured with the proposals as ground truth (4096 anchors per image,
positive fraction 1.0, IoU 0.7 / 0.3, L1 box loss): see ``configs/pretrain_box_faster_rcnn.py``.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
from detectron2.layers import ShapeSpec, cat
from detectron2.modeling import GeneralizedRCNN, StandardROIHeads
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.proposal_generator.proposal_utils import add_ground_truth_to_proposals
from detectron2.modeling.roi_heads import FastRCNNOutputLayers
from detectron2.structures import Instances, pairwise_iou

from ..utils.events import put_scalar
from .contrastive import ContrastiveSamples, ProjectionMLP

__all__ = ["AlignDetRCNN", "ContrastiveROIHeads", "ContrastiveOutputLayers"]


class ContrastiveOutputLayers(FastRCNNOutputLayers):
    """Pre-training box predictor: ``projector`` (MLP to an embedding) and agnostic ``bbox_pred``.

    The reference indexes a class-specific regressor by instance id, which is meaningless; here the
    regressor is class-agnostic, with Detectron2's L1 loss on deltas (``smooth_l1_beta=0``).
    """

    def __init__(
        self,
        input_shape: ShapeSpec,
        *,
        box2box_transform: Box2BoxTransform,
        embed_dim: int = 256,
        hidden_dim: Optional[int] = None,
        projector_init_std: Optional[float] = None,
        smooth_l1_beta: float = 0.0,
    ):
        """
        Args:
            input_shape: output shape of the box head.
            box2box_transform: delta encoding of the regressor (weights (10, 10, 5, 5) in R-CNN).
            embed_dim: size of the contrastive embedding.
            hidden_dim: hidden size of the projection (default: the input size, 1024 -> 1024 ->
                256).
            projector_init_std: N(0, std) init of the projection (the reference: 0.01); None
                keeps PyTorch's default init.
            smooth_l1_beta: 0 gives the L1 loss.
        """
        super().__init__(
            input_shape,
            box2box_transform=box2box_transform,
            num_classes=1,
            cls_agnostic_bbox_reg=True,
            smooth_l1_beta=smooth_l1_beta,
        )
        del self.cls_score
        in_dim = self.bbox_pred.in_features
        self.projector = ProjectionMLP(in_dim, hidden_dim or in_dim, embed_dim, projector_init_std)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            x: (R, C) or (R, C, H, W) box-head features.

        Returns:
            (R, embed_dim) embeddings and (R, 4) class-agnostic box deltas.
        """
        x = x.flatten(start_dim=1)
        return self.projector(x), self.bbox_pred(x)

    def losses(self, predictions, proposals: List[Instances]) -> Dict[str, torch.Tensor]:
        """L1 box regression loss over the sampled (all foreground) ROIs, averaged over them."""
        _, deltas = predictions
        if not proposals:
            return {"loss_box_reg": deltas.sum() * 0.0}
        proposal_boxes = cat([p.proposal_boxes.tensor for p in proposals])
        gt_boxes = cat([p.gt_boxes.tensor for p in proposals])
        classes = torch.zeros(len(proposal_boxes), dtype=torch.int64, device=deltas.device)
        loss = self.box_reg_loss(proposal_boxes, gt_boxes, deltas, classes)
        return {"loss_box_reg": loss * self.loss_weight.get("loss_box_reg", 1.0)}

    def inference(self, predictions, proposals):
        raise NotImplementedError(
            "a pre-training box predictor has no class scores: export the checkpoint "
            "(tools/export.py) and fine-tune it"
        )


class ContrastiveROIHeads(StandardROIHeads):
    """ROI heads of pre-training: foreground ROIs labelled with instance ids, embeddings out.

    Takes :class:`StandardROIHeads`' arguments (``batch_size_per_image`` is the cap on ROIs per
    image; ``positive_fraction`` is unused: every ROI is foreground) plus ``always_keep_gt``.
    """

    def __init__(self, *, always_keep_gt: bool = False, **kwargs):
        """
        Args:
            always_keep_gt: when an image has more foreground ROIs than the cap, keep every
                pseudo-GT box first so that each id has a key in the other view (CPU configs, with
                few ROIs); otherwise sample uniformly among all foreground ROIs, as the reference
                does.
            kwargs: arguments of :class:`StandardROIHeads`.
        """
        super().__init__(**kwargs)
        self.always_keep_gt = always_keep_gt

    @torch.no_grad()
    def label_and_sample_proposals(
        self, proposals: List[Instances], targets: List[Instances]
    ) -> List[Instances]:
        """Keeps foreground ROIs only and labels them with instance ids.

        Args:
            proposals: per image, RPN proposals with ``proposal_boxes``.
            targets: per image, pseudo-GT with ``gt_boxes`` and batch-unique ``gt_ids``.

        Returns:
            per image, at most ``batch_size_per_image`` ROIs with ``proposal_boxes``, ``gt_boxes``
            (matched pseudo-GT box), ``gt_ids`` (its id) and ``is_gt`` (True for a pseudo-GT box
            itself, False for an RPN proposal).
        """
        n_rpn = [len(p) for p in proposals]
        # d2 appends the GT boxes at the end of each image's proposals.
        proposals = add_ground_truth_to_proposals(targets, proposals)
        out, num_fg = [], []
        for p, t, n in zip(proposals, targets, n_rpn):
            if len(t) == 0:  # every box of the image was dropped (degenerate in a view)
                fg = torch.zeros(0, dtype=torch.int64, device=p.proposal_boxes.device)
                matched_idxs = fg
            else:
                iou = pairwise_iou(t.gt_boxes, p.proposal_boxes)
                matched_idxs, matched_labels = self.proposal_matcher(iou)
                fg = torch.nonzero(matched_labels == 1).squeeze(1)
                fg = self._sample(fg, n, p.proposal_boxes.device)
            roi = p[fg]
            roi.gt_boxes = t.gt_boxes[matched_idxs[fg]]
            roi.gt_ids = t.gt_ids[matched_idxs[fg]]
            roi.is_gt = fg >= n
            out.append(roi)
            num_fg.append(len(roi))
        put_scalar("roi_head/num_fg_samples", sum(num_fg) / max(len(num_fg), 1))
        return out

    def _sample(self, fg: torch.Tensor, n_rpn: int, device) -> torch.Tensor:
        cap = self.batch_size_per_image
        if len(fg) <= cap:
            return fg
        if self.always_keep_gt:
            is_gt = fg >= n_rpn
            gt, rest = fg[is_gt], fg[~is_gt]
            if len(gt) >= cap:
                return gt[torch.randperm(len(gt), device=device)[:cap]]
            return torch.cat([gt, rest[torch.randperm(len(rest), device=device)[: cap - len(gt)]]])
        return fg[torch.randperm(len(fg), device=device)[:cap]]

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
            with_losses: compute the box regression loss (the momentum branch does not need it).

        Returns:
            (losses, samples): the samples are the sampled ROIs of all images, R in all, with
            (R, D) embeddings, (R,) int64 ids and, as the fixed set, the pseudo-GT boxes.
        """
        rois = self.label_and_sample_proposals(proposals, targets)
        feats = [features[f] for f in self.box_in_features]
        box_features = self.box_head(self.box_pooler(feats, [r.proposal_boxes for r in rois]))
        predictions = self.box_predictor(box_features)
        ids = cat([r.gt_ids for r in rois])
        is_gt = cat([r.is_gt for r in rois])
        losses = self.box_predictor.losses(predictions, rois) if with_losses else {}
        return losses, ContrastiveSamples(predictions[0], ids, is_gt)


class AlignDetRCNN(GeneralizedRCNN):
    """``GeneralizedRCNN`` with the pre-training forward used by :class:`~.momentum.MomentumPair`.

    Its state dict is that of a Detectron2 Faster R-CNN plus
    ``roi_heads.box_predictor.projector.*``, so the export only has to drop the projector.
    """

    def forward_pretrain(
        self, batched_inputs: List[Dict], with_losses: bool = True
    ) -> Tuple[Dict[str, torch.Tensor], ContrastiveSamples]:
        """
        Args:
            batched_inputs: per image ``{"image": (C, H, W) tensor, "instances": Instances}`` with
                ``gt_boxes`` and batch-unique ``gt_ids``.
            with_losses: compute the RPN and box regression losses.

        Returns:
            (losses, samples): regression losses of the RPN and the box head, and the ROI
            embeddings with the instance ids of their boxes (:class:`ContrastiveSamples`).
        """
        images = self.preprocess_image(batched_inputs)
        targets = [x["instances"].to(self.device) for x in batched_inputs]
        features = self.backbone(images.tensor)
        proposals, rpn_losses = self.proposal_generator(images, features, targets)
        roi_losses, samples = self.roi_heads.forward_pretrain(
            features, proposals, targets, with_losses
        )
        losses = {**rpn_losses, **roi_losses} if with_losses else {}
        return losses, samples

    @property
    def contrastive_stage_weights(self) -> Tuple[float, ...]:
        """Weights of the per-stage contrastive losses of a cascade (one stage: (1.0,))."""
        return getattr(self.roi_heads, "stage_loss_weights", (1.0,))

    def forward(self, batched_inputs: List[Dict]):
        if self.training:
            raise RuntimeError(
                "AlignDetRCNN trains inside MomentumPair (its forward_pretrain); to train a "
                "detector with labels, export the checkpoint and use a fine-tune config"
            )
        return super().forward(batched_inputs)
