"""AlignDet's box-domain pre-training of DETR (DESIGN.md 2.4).

The proposals' cluster ids are DETR's classes (``tools/cluster_proposals.py``): the set loss
matches every decoder layer to the proposals with cost 1 class + 5 L1 + 2 GIoU and the no-object
class weighs 1.0. A second Hungarian match on the last layer's boxes alone (5 L1 + 2 GIoU) gives
each proposal a query: that query's decoder output, through a 256 -> 256 -> 256 projector, is the
proposal's embedding for the contrastive loss; unmatched queries are background, negatives only.
The released code's instance match read class probabilities at the instance id, which means
nothing (ids are not classes); ours never reads class scores.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import torch

from ..contrastive import BACKGROUND_ID, ContrastiveSamples, ProjectionMLP
from .detr import DETR
from .matcher import HungarianMatcher

__all__ = ["AlignDetDETR"]


class AlignDetDETR(DETR):
    """DETR with a projector on its decoder outputs, for :class:`~aligndet_d2.modeling.MomentumPair`.

    Args:
        instance_matcher: the box-only matcher of proposals to queries (its ``cost_class`` must be
            0).
        embed_dim: embedding size of the projector (256).
        **kwargs: :class:`DETR`'s arguments (``num_classes``: the number of clusters).
    """

    # Copied into the momentum detector at every update instead of averaged: the query positions
    # are what the two branches' queries are matched by (the reference copies them too).
    momentum_copied = ("query_embed.weight",)

    def __init__(self, *, instance_matcher: HungarianMatcher, embed_dim: int = 256, **kwargs):
        super().__init__(**kwargs)
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
            (losses, samples): the set losses of every decoder layer; one sample per query of the
            last layer, (B * Q, embed_dim), with its proposal's id or BACKGROUND_ID. The fixed set
            is the matched queries: DETR has no sample chosen by box geometry alone.
        """
        images, mask = self.preprocess(batched_inputs)
        hs, logits, boxes = self.decode(images, mask)
        inst = [d["instances"].to(self.device) for d in batched_inputs]
        targets = self.normalized_targets(inst)
        losses = {}
        if with_losses:
            losses = self.criterion(logits, boxes, [i.gt_classes for i in inst], targets)
        b, q = hs.shape[1:3]
        ids = torch.full((b, q), BACKGROUND_ID, dtype=torch.int64, device=self.device)
        for i, (qi, ti) in enumerate(self.instance_matcher(boxes[-1].detach(), targets)):
            ids[i, qi.to(self.device)] = inst[i].gt_ids[ti.to(self.device)]
        emb = self.projector(hs[-1]).flatten(0, 1)
        ids = ids.flatten()
        return losses, ContrastiveSamples(emb, ids, ids >= 0)
