"""RetinaNet and FCOS for box-domain pre-training (docs/DESIGN.md 2.4).

Both replace the class logits by a projection to one embedding per anchor (RetinaNet) or point
(FCOS), label anchors / points with the batch-unique id of their pseudo-GT box (background:
``BACKGROUND_ID``), sample a fixed number of them (positives first, background fills the rest;
background samples are contrastive negatives only) and keep the detector's own box losses on the
sampled positives.

Embeddings, ids, anchors and regression targets are flattened in one order everywhere: image-major,
then level, then (H, W, A) as Detectron2 flattens anchors. (The reference flattens the embeddings
level-major but the labels image-major, which pairs embeddings with other images' ids as soon as a
device holds two images.)

Differences of the FCOS pre-training from the reference (which uses MMDetection's FCOS):
Detectron2's assignment (centre sampling with radius 1.5 and scale ranges of 4-8 strides per level,
where the reference has no centre sampling and fixed regression ranges 64/128/256/512), Detectron2's
GIoU box loss (the reference: -log IoU weighted by the centerness target) and centerness BCE, both
normalised by the number of sampled positives, and the centerness branch on the box tower (the
reference has it on the classification tower).
"""

from __future__ import annotations

import logging
from typing import Dict, List, Tuple

import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling.box_regression import _dense_box_regression_loss
from detectron2.modeling.meta_arch import FCOS, RetinaNet
from detectron2.modeling.meta_arch.dense_detector import permute_to_N_HWA_K
from detectron2.modeling.meta_arch.fcos import FCOSHead
from detectron2.modeling.meta_arch.retinanet import RetinaNetHead
from detectron2.structures import Boxes, Instances, pairwise_iou
from detectron2.structures.boxes import matched_pairwise_iou
from torch import nn
from torch.nn import functional as F

from ..utils.events import put_scalar
from .contrastive import BACKGROUND_ID, ContrastiveSamples

__all__ = [
    "AlignDetRetinaNet",
    "AlignDetFCOS",
    "ContrastiveRetinaNetHead",
    "ContrastiveFCOSHead",
    "best_per_id",
    "sample_dense",
]

logger = logging.getLogger(__name__)


class _ProjectionHeadMixin:
    """What the two contrastive heads share: the projection's last 1x1 layer runs only where needed.

    Pre-training samples a few thousand anchors / points per view; applying the projection's last
    (widest) layer to every location of every level would be wasted work. ``embed_features`` runs
    the tower and the projection up to its last layer on the whole maps; ``embed_at`` applies the
    last layer at the sampled anchors only, which gives the same embeddings as the full maps there.
    """

    embed_dim: int
    num_anchors: int

    def embed_features(self, features: List[torch.Tensor]) -> List[torch.Tensor]:
        """Per level ``(N, C, H, W)``: the tower, then the projection without its last layer."""
        return [self.projector[:-1](self.cls_subnet(x)) for x in features]

    def embed_at(self, feats: List[torch.Tensor], index: torch.Tensor) -> torch.Tensor:
        """Embeddings of the anchors at flat indices.

        Args:
            feats: the output of :meth:`embed_features`.
            index: (K,) int64 indices into the batch's anchors flattened image-major, then level,
                then (H, W, A) (Detectron2's anchor order).

        Returns:
            (K, embed_dim) embeddings.
        """
        a_num, d = self.num_anchors, self.embed_dim
        last = self.projector[-1]
        weight = last.weight.view(a_num, d, -1)  # (A, D, C)
        bias = last.bias.view(a_num, d)
        if len(index) == 0:
            return feats[0].new_zeros(0, d)
        # Every level's positions in one (N, P, C) table: with A anchors at each position of
        # every level, anchor r of an image is position r // A of the levels' concatenation and
        # anchor r % A there. One gather for all levels, where a loop over levels and anchors
        # waited for the device twice per (level, anchor) (benchmarks/results/step_ops.md).
        table = torch.cat([f.flatten(2) for f in feats], dim=2).transpose(1, 2)
        per_image = table.shape[1] * a_num
        img, r = index // per_image, index % per_image
        v = table[img, r // a_num]  # (K, C)
        if a_num == 1:
            return v @ weight[0].T + bias[0]
        # Grouped by anchor, each group through its anchor's slice of the last layer: the
        # flops of one matmul per sample, with a single read of the group sizes.
        anchor = r % a_num
        order = torch.argsort(anchor, stable=True)
        counts = torch.bincount(anchor, minlength=a_num).tolist()
        groups = torch.split(v[order], counts)
        values = torch.cat([g @ weight[a].T + bias[a] for a, g in enumerate(groups) if counts[a]])
        # In the dtype of the values (float32 when the bias addition promotes them under autocast),
        # not of the features: index_put refuses a mismatch.
        out = values.new_empty(len(index), d)
        out[order] = values
        return out

    def forward(self, features: List[torch.Tensor]):
        """Full maps, as a Detectron2 head returns them: per level ``(N, A * embed_dim, H, W)``
        embeddings, then the box outputs of :meth:`box_outputs`."""
        emb = [self.projector[-1](x) for x in self.embed_features(features)]
        return (emb, *self.box_outputs(features))


class ContrastiveRetinaNetHead(_ProjectionHeadMixin, RetinaNetHead):
    """RetinaNet head whose classifier is a projection: conv1x1 C -> C -> A x ``embed_dim``."""

    def __init__(
        self,
        *,
        input_shape: List[ShapeSpec],
        num_anchors: int,
        conv_dims: List[int],
        norm: str = "",
        embed_dim: int = 256,
    ):
        """
        Args:
            input_shape, num_anchors, conv_dims, norm: as :class:`RetinaNetHead`.
            embed_dim: size of the contrastive embedding of each anchor.
        """
        super().__init__(
            input_shape=input_shape,
            num_classes=1,
            num_anchors=num_anchors,
            conv_dims=conv_dims,
            norm=norm,
        )
        del self.cls_score
        c = conv_dims[-1]
        self.embed_dim = embed_dim
        self.num_anchors = num_anchors
        self.projector = nn.Sequential(
            nn.Conv2d(c, c, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c, num_anchors * embed_dim, kernel_size=1),
        )

    def box_outputs(self, features: List[torch.Tensor]):
        """Per level ``(N, A * 4, H, W)`` box deltas, as a one-element tuple."""
        return ([self.bbox_pred(self.bbox_subnet(x)) for x in features],)


class ContrastiveFCOSHead(_ProjectionHeadMixin, FCOSHead):
    """FCOS head whose classifier is a projection: conv3x3 C -> C, conv1x1 -> ``embed_dim``."""

    def __init__(
        self,
        *,
        input_shape: List[ShapeSpec],
        conv_dims: List[int],
        norm: str = "",
        embed_dim: int = 256,
    ):
        super().__init__(input_shape=input_shape, conv_dims=conv_dims, num_classes=1, norm=norm)
        del self.cls_score
        c = conv_dims[-1]
        self.embed_dim = embed_dim
        self.num_anchors = 1
        self.projector = nn.Sequential(
            nn.Conv2d(c, c, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c, embed_dim, kernel_size=1),
        )

    def box_outputs(self, features: List[torch.Tensor]):
        """Per level box deltas ``(N, 4, H, W)`` and centerness logits ``(N, 1, H, W)``."""
        deltas, ctrness = [], []
        for x in features:
            box_feature = self.bbox_subnet(x)
            deltas.append(self.bbox_pred(box_feature))
            ctrness.append(self.ctrness(box_feature))
        return deltas, ctrness


def sample_dense(ids: torch.Tensor, num: int, valid: torch.Tensor = None) -> torch.Tensor:
    """Indices of up to ``num`` samples: every positive (random subset if more), background fills.

    Args:
        ids: (R,) int64 ids, ``BACKGROUND_ID`` for background.
        num: number of samples.
        valid: (R,) bool; False excludes a sample (ignored anchors).

    Returns:
        (K,) int64 indices, positives first, K <= num.
    """
    valid = torch.ones_like(ids, dtype=torch.bool) if valid is None else valid
    pos = torch.nonzero(valid & (ids >= 0)).squeeze(1)
    neg = torch.nonzero(valid & (ids == BACKGROUND_ID)).squeeze(1)
    pos = pos[torch.randperm(len(pos), device=ids.device)[:num]]
    neg = neg[torch.randperm(len(neg), device=ids.device)[: num - len(pos)]]
    return torch.cat([pos, neg])


def best_per_id(ids: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """For each id >= 0, its sample of highest quality (the first of them on a tie).

    Args:
        ids: (K,) int64 ids, ``BACKGROUND_ID`` for background.
        quality: (K,) float scores.

    Returns:
        (K,) bool, True at one sample per id present.
    """
    out = torch.zeros_like(ids, dtype=torch.bool)
    pos = torch.nonzero(ids >= 0).squeeze(1)
    if not len(pos):
        return out
    _, inverse = torch.unique(ids[pos], return_inverse=True)
    n = int(inverse.max()) + 1
    q = quality[pos].float()
    best = q.new_full((n,), float("-inf")).scatter_reduce(0, inverse, q, "amax")
    tied = q == best[inverse]
    first = pos.new_full((n,), len(ids)).scatter_reduce(0, inverse[tied], pos[tied], "amin")
    out[first[first < len(ids)]] = True  # an id whose qualities are all NaN has none
    return out


class _DensePretrainMixin:
    """``forward_pretrain`` of the dense detectors; subclasses label anchors and compute losses."""

    samples_per_image: int
    images_without_positives: int

    def _count_empty(self, ids: torch.Tensor, num_images: int) -> None:
        # Images whose proposals matched no anchor (too small, or outside every size range) give
        # background samples only: count them instead of failing.
        empty = int(((ids >= 0).reshape(num_images, -1).sum(1) == 0).sum())
        if empty:
            if self.images_without_positives == 0:
                logger.warning(
                    "an image's proposals matched no anchor / point: it contributes background "
                    "samples only (counted as pretrain/images_without_positives)"
                )
            self.images_without_positives += empty
        put_scalar(
            "pretrain/images_without_positives", self.images_without_positives, smoothing_hint=False
        )

    def forward(self, batched_inputs: List[Dict]):
        # Detectron2's dense forward would train on labels, or at inference reshape the embeddings
        # as class logits and fail with a shape error: neither means anything here.
        if self.training:
            raise RuntimeError(
                f"{type(self).__name__} trains inside MomentumPair (its forward_pretrain); to "
                "train a detector with labels, export the checkpoint and use a fine-tune config"
            )
        raise NotImplementedError(
            "a pre-training dense head has no class scores: export the checkpoint "
            "(tools/export.py) and fine-tune it"
        )

    def forward_pretrain(
        self, batched_inputs: List[Dict], with_losses: bool = True
    ) -> Tuple[Dict[str, torch.Tensor], ContrastiveSamples]:
        """
        Args:
            batched_inputs: per image ``{"image", "instances"}`` with ``gt_boxes`` and batch-unique
                ``gt_ids``.
            with_losses: compute the box losses (the momentum branch does not need them).

        Returns:
            (losses, samples): the sampled anchors / points of all images, K in all, with (K, D)
            embeddings, (K,) ids and, as the fixed set, each proposal's best sampled positive
            (:meth:`match_quality`): one sample per proposal, as R-CNN's pseudo-GT boxes, chosen
            by the boxes' geometry alone, not by the model.
        """
        images = self.preprocess_image(batched_inputs)
        gt = [x["instances"].to(self.device) for x in batched_inputs]
        features = self.backbone(images.tensor)
        features = [features[f] for f in self.head_in_features]
        anchors = self.anchor_generator(features)
        ids, boxes, valid = self.label_anchors_with_ids(anchors, gt)  # (N, R), (N, R, 4), (N, R)
        self._count_empty(ids, len(gt))
        keep = self._sample(ids, valid)  # flat indices into N * R, image-major
        emb = self.head.embed_at(self.head.embed_features(features), keep)
        flat_ids = ids.reshape(-1)[keep]
        n_anchors = ids.shape[1]
        quality = self.match_quality(
            Boxes.cat(anchors).tensor[keep % n_anchors], boxes.reshape(-1, 4)[keep]
        )
        losses = {}
        if with_losses:
            pos = torch.zeros_like(ids, dtype=torch.bool).reshape(-1)
            pos[keep[flat_ids >= 0]] = True
            box_outputs = self.head.box_outputs(features)
            losses = self.pretrain_box_losses(anchors, box_outputs, boxes, pos.reshape(ids.shape))
        return losses, ContrastiveSamples(emb, flat_ids, best_per_id(flat_ids, quality))


class AlignDetRetinaNet(_DensePretrainMixin, RetinaNet):
    """RetinaNet with the pre-training forward of :class:`~.momentum.MomentumPair`.

    Anchors with IoU >= 0.5 to a pseudo-GT box take its id, < 0.4 are background, between ignored
    (``anchor_matcher``); ``samples_per_image`` anchors are sampled per image; L1 loss on the deltas
    of the sampled positives, normalised by their number.
    """

    def __init__(self, *, samples_per_image: int = 2048, **kwargs):
        """
        Args:
            samples_per_image: anchors sampled per image (positives first).
            kwargs: arguments of :class:`RetinaNet` (``num_classes`` is unused).
        """
        super().__init__(**kwargs)
        self.samples_per_image = samples_per_image
        self.images_without_positives = 0

    @torch.no_grad()
    def label_anchors_with_ids(self, anchors: List[Boxes], gt: List[Instances]):
        """
        Returns:
            (N, R) int64 ids (``BACKGROUND_ID`` for background), (N, R, 4) matched boxes, and
            (N, R) bool, False for ignored anchors.
        """
        all_anchors = Boxes.cat(anchors)
        ids, boxes, valid = [], [], []
        for inst in gt:
            if len(inst) == 0:
                n = len(all_anchors)
                ids.append(torch.full((n,), BACKGROUND_ID, dtype=torch.int64, device=self.device))
                boxes.append(torch.zeros_like(all_anchors.tensor))
                valid.append(torch.ones(n, dtype=torch.bool, device=self.device))
                continue
            matched, labels = self.anchor_matcher(pairwise_iou(inst.gt_boxes, all_anchors))
            i = inst.gt_ids[matched].clone()
            i[labels != 1] = BACKGROUND_ID
            ids.append(i)
            boxes.append(inst.gt_boxes.tensor[matched])
            valid.append(labels != -1)
        return torch.stack(ids), torch.stack(boxes), torch.stack(valid)

    def _sample(self, ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        n, r = ids.shape
        return torch.cat(
            [sample_dense(ids[i], self.samples_per_image, valid[i]) + i * r for i in range(n)]
        )

    @torch.no_grad()
    def match_quality(self, anchors: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """(K,) IoU of each anchor (K, 4) with its matched box (K, 4): the anchor matching best."""
        return matched_pairwise_iou(Boxes(anchors), Boxes(boxes))

    def pretrain_box_losses(self, anchors, box_outputs, boxes, pos):
        """L1 on the deltas of the sampled positives, averaged over them (in float32)."""
        deltas = [permute_to_N_HWA_K(x, 4).float() for x in box_outputs[0]]
        loss = _dense_box_regression_loss(
            anchors,
            self.box2box_transform,
            deltas,
            list(boxes),
            pos,
            box_reg_loss_type="smooth_l1",
            smooth_l1_beta=0.0,
        )
        return {"loss_box_reg": loss / max(int(pos.sum()), 1)}


class AlignDetFCOS(_DensePretrainMixin, FCOS):
    """FCOS with the pre-training forward of :class:`~.momentum.MomentumPair`.

    Detectron2's FCOS assignment with ids instead of classes; ``samples_per_view`` points sampled
    over the batch (positives first, background fills); Detectron2's GIoU box loss and centerness
    BCE on the sampled positives, normalised by their number.
    """

    def __init__(self, *, samples_per_view: int = 2048, **kwargs):
        super().__init__(**kwargs)
        self.samples_per_view = samples_per_view
        self.images_without_positives = 0

    @torch.no_grad()
    def label_anchors_with_ids(self, anchors: List[Boxes], gt: List[Instances]):
        """Detectron2's FCOS matching (:meth:`FCOS._match_anchors`) with ids; nothing is ignored."""
        all_anchors = Boxes.cat(anchors)
        ids, boxes = [], []
        for inst in gt:
            n = len(all_anchors)
            if len(inst) == 0:
                ids.append(torch.full((n,), BACKGROUND_ID, dtype=torch.int64, device=self.device))
                boxes.append(torch.zeros_like(all_anchors.tensor))
                continue
            quality, matched = self._match_anchors(inst.gt_boxes, anchors).max(dim=0)
            i = inst.gt_ids[matched].clone()
            i[quality < 1e-5] = BACKGROUND_ID
            ids.append(i)
            boxes.append(inst.gt_boxes.tensor[matched])
        ids = torch.stack(ids)
        return ids, torch.stack(boxes), torch.ones_like(ids, dtype=torch.bool)

    def _sample(self, ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return sample_dense(ids.reshape(-1), self.samples_per_view, valid.reshape(-1))

    @torch.no_grad()
    def match_quality(self, anchors: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """(K,) FCOS centerness of each point (anchors (K, 4)) in its matched box (K, 4): the
        point nearest the box's centre scores highest. Background rows give NaN (unused)."""
        return self.compute_ctrness_targets([Boxes(anchors)], [boxes])[0]

    def pretrain_box_losses(self, anchors, box_outputs, boxes, pos):
        """Detectron2's FCOS GIoU and centerness losses on the sampled positives, averaged.

        In float32: under autocast the decoded boxes would be half precision and the ground truth
        float32, which fvcore's GIoU loss cannot mix (an ``index_put`` dtype error).
        """
        deltas = [permute_to_N_HWA_K(x, 4).float() for x in box_outputs[0]]
        normalizer = max(int(pos.sum()), 1)
        loss_loc = _dense_box_regression_loss(
            anchors, self.box2box_transform, deltas, list(boxes), pos, box_reg_loss_type="giou"
        )
        ctr_targets = self.compute_ctrness_targets(anchors, list(boxes))  # (N, R)
        ctr_pred = torch.cat([permute_to_N_HWA_K(x, 1).float() for x in box_outputs[1]], dim=1)
        ctr_pred = ctr_pred.squeeze(2)
        loss_ctr = F.binary_cross_entropy_with_logits(
            ctr_pred[pos], ctr_targets[pos], reduction="sum"
        )
        return {"loss_fcos_loc": loss_loc / normalizer, "loss_fcos_ctr": loss_ctr / normalizer}
