"""AlignDet's box-domain pre-training of DETR (docs/DESIGN.md 2.4).

The proposals' cluster ids are DETR's classes (``tools/cluster_proposals.py``): the set loss
matches every decoder layer to the proposals with cost 1 class + 5 L1 + 2 GIoU, the no-object
class weighs 1.0 and the cross-entropy over all queries is divided by the matched ones, as the
reference's head does (``SetCriterion(class_normalizer="matched")``, set in
``configs/pretrain_box_detr.py``).

A second Hungarian match on boxes alone (5 L1 + 2 GIoU), on each decoder layer's boxes, gives each
proposal one query per layer: those queries' decoder outputs, through a 256 -> 256 -> 256
projector, are the proposal's embeddings for the contrastive loss, and the unmatched queries of
every layer are background, negatives only. All layers go into one contrastive loss, as in the
reference (its ``obj_loss`` reads every decoder layer's projected outputs and ids);
``contrast_layers="last"`` contrasts the last layer only, which this project did before. The
released code's instance match read class probabilities at the instance id, which means nothing
(ids are not classes); ours never reads class scores.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import torch

from ..contrastive import BACKGROUND_ID, ContrastiveSamples, ProjectionMLP
from .detr import DETR
from .matcher import HungarianMatcher

__all__ = ["AlignDetDETR"]


class AlignDetDETR(DETR):
    """DETR with a projector on its decoder outputs, for
    :class:`~aligndet_d2.modeling.MomentumPair`.

    Args:
        instance_matcher: the box-only matcher of proposals to queries (its ``cost_class`` must be
            0).
        embed_dim: embedding size of the projector (256).
        contrast_layers: "all" (the reference): every decoder layer's queries, each layer matched
            on its own boxes, enter the contrastive loss; "last": the last layer's only.
        **kwargs: :class:`DETR`'s arguments (``num_classes``: the number of clusters).
    """

    # Copied into the momentum detector at every update instead of averaged: the query positions
    # are what the two branches' queries are matched by (the reference copies them too).
    momentum_copied = ("query_embed.weight",)

    def __init__(
        self,
        *,
        instance_matcher: HungarianMatcher,
        embed_dim: int = 256,
        contrast_layers: str = "all",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if contrast_layers not in ("all", "last"):
            raise ValueError(f"contrast_layers={contrast_layers!r} (allowed: 'all', 'last')")
        self.contrast_layers = contrast_layers
        if instance_matcher.cost_class != 0:
            raise ValueError(
                "instance_matcher: the match of proposals to queries uses box costs only "
                f"(cost_class=0), got cost_class={instance_matcher.cost_class}"
            )
        self.instance_matcher = instance_matcher
        d = self.transformer.d_model
        self.projector = ProjectionMLP(d, d, embed_dim)

    def forward(self, batched_inputs):
        raise RuntimeError("AlignDetDETR runs inside MomentumPair (forward_pretrain)")

    def forward_pretrain(
        self, batched_inputs: List[Dict], with_losses: bool
    ) -> Tuple[Dict[str, torch.Tensor], ContrastiveSamples]:
        """
        Args:
            batched_inputs: one view per image, ``instances`` with ``gt_boxes``, ``gt_ids`` (unique
                in the batch) and ``gt_classes`` (cluster ids).
            with_losses: compute the set loss (the online branch) or not (the momentum one).

        Returns:
            (losses, samples): the set losses of every decoder layer; one sample per query of each
            contrasted layer, (L' * B * Q, embed_dim) in (layer, image, query) order, with the id
            of the proposal matched to it on that layer's boxes or BACKGROUND_ID. The fixed set
            is the last layer's matched queries: DETR has no sample chosen by box geometry alone.
        """
        images, mask = self.preprocess(batched_inputs)
        hs, logits, boxes = self.decode(images, mask)
        inst = [d["instances"].to(self.device) for d in batched_inputs]
        targets = self.normalized_targets(inst)
        losses = {}
        if with_losses:
            losses = self.criterion(logits, boxes, [i.gt_classes for i in inst], targets)
        layers = list(range(len(hs))) if self.contrast_layers == "all" else [len(hs) - 1]
        ids = self.query_ids(boxes, targets, [i.gt_ids for i in inst], layers)
        emb = self.projector(hs[layers]).flatten(0, 2)
        last = torch.zeros_like(ids, dtype=torch.bool)
        last[-1] = True
        ids, last = ids.flatten(), last.flatten()
        return losses, ContrastiveSamples(emb, ids, (ids >= 0) & last)

    @torch.no_grad()
    def query_ids(
        self,
        boxes: torch.Tensor,
        targets: List[torch.Tensor],
        gt_ids: List[torch.Tensor],
        layers: List[int],
    ) -> torch.Tensor:
        """The instance id of every query, each decoder layer matched on its own boxes.

        Args:
            boxes: (L, B, Q, 4) predicted normalised (cx, cy, w, h) boxes of every layer.
            targets: per image, (T_i, 4) normalised proposal boxes.
            gt_ids: per image, (T_i,) int64 batch-unique proposal ids.
            layers: the decoder layers to label.

        Returns:
            (len(layers), B, Q) int64: the id of the proposal matched to each query on that
            layer, BACKGROUND_ID for the unmatched ones.
        """
        b, q = boxes.shape[1:3]
        ids = torch.full((len(layers), b, q), BACKGROUND_ID, dtype=torch.int64, device=boxes.device)
        for j, layer in enumerate(layers):
            for i, (qi, ti) in enumerate(self.instance_matcher(boxes[layer], targets)):
                ids[j, i, qi.to(boxes.device)] = gt_ids[i][ti.to(boxes.device)]
        return ids
