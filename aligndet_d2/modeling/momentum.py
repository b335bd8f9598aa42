"""The online / momentum detector pair of box-domain pre-training (DESIGN.md 2.3).

The online detector sees view 1 and gets gradients; the momentum detector, an exponential moving
average of it, sees view 2 under ``no_grad``. The loss is the box-level contrastive loss between
their ROI (or anchor / point) embeddings plus the online detector's own regression losses; it is not
symmetrised. :class:`~aligndet_d2.engine.hooks.MomentumUpdateHook` updates the copy after every
optimizer step.
"""

from __future__ import annotations

import copy
import math
from typing import Dict, List

import torch
from detectron2.utils.events import get_event_storage
from torch import nn

from .contrastive import box_contrastive_loss

__all__ = ["MomentumPair", "cosine_momentum", "make_ids_unique"]


def cosine_momentum(iteration: int, max_iter: int, base: float = 0.996, end: float = 1.0) -> float:
    """``m = end - (end - base) * (cos(pi k / K) + 1) / 2``: ``base`` at k = 0, ``end`` at k = K."""
    return end - (end - base) * (math.cos(math.pi * iteration / max_iter) + 1) / 2


def make_ids_unique(views: List[List[Dict]]) -> None:
    """Offsets each image's ``gt_ids`` so that ids are unique in the batch and equal across views.

    Args:
        views: per view, the list of per-image dicts with ``instances.gt_ids`` (modified in place).
    """
    offset = 0
    for per_view in zip(*views):
        n = len(per_view[0]["instances"])
        for d in per_view:
            d["instances"].gt_ids = d["instances"].gt_ids + offset
        offset += n


class MomentumPair(nn.Module):
    """Online detector + momentum copy; ``forward`` returns the pre-training losses.

    The detector must implement ``forward_pretrain(batched_inputs, with_losses) -> (losses, emb,
    ids)`` (see :class:`~aligndet_d2.modeling.rcnn.AlignDetRCNN`). The state dict holds both
    branches (``online.*`` and ``momentum.*``); loading a plain detector checkpoint (keys without
    either prefix, such as ImageNet backbone weights) loads it into the online branch, and the
    momentum hook copies the online branch into the momentum one before the first step.
    """

    def __init__(
        self,
        *,
        detector: nn.Module,
        temperature: float = 0.5,
        loss_weight: float = 1.0,
        gather_negatives: bool = False,
        base_momentum: float = 0.996,
    ):
        """
        Args:
            detector: the online detector (its copy becomes the momentum detector).
            temperature: contrastive temperature ``t``.
            loss_weight: weight of the contrastive loss.
            gather_negatives: add the momentum embeddings of every other process as negatives
                (the reference uses each device's own samples only).
            base_momentum: momentum at the first iteration (cosine schedule to 1.0).
        """
        super().__init__()
        self.online = detector
        self.momentum = copy.deepcopy(detector)
        for p in self.momentum.parameters():
            p.requires_grad_(False)
        self.temperature = temperature
        self.loss_weight = loss_weight
        self.gather_negatives = gather_negatives
        self.base_momentum = base_momentum
        self._register_load_state_dict_pre_hook(self._load_plain_detector)

    @property
    def device(self) -> torch.device:
        return self.online.device

    @torch.no_grad()
    def copy_online_to_momentum(self) -> None:
        """Makes the momentum detector an exact copy of the online one."""
        self.momentum.load_state_dict(self.online.state_dict())

    @torch.no_grad()
    def update_momentum(self, m: float) -> None:
        """``theta_k = m theta_k + (1 - m) theta_q`` on trainable parameters; buffers are copied.

        Parameters the online detector does not train (the frozen backbone) are equal in both and
        stay so.
        """
        pairs = [
            (k, q)
            for q, k in zip(self.online.parameters(), self.momentum.parameters())
            if q.requires_grad
        ]
        if pairs:
            ks, qs = zip(*pairs)
            torch._foreach_lerp_(list(ks), list(qs), 1.0 - m)
        # The reference leaves buffers as loaded; copying them keeps the copy's norm statistics equal
        # to the online ones (the same thing here, every norm layer being frozen or GroupNorm).
        for bq, bk in zip(self.online.buffers(), self.momentum.buffers()):
            bk.copy_(bq)

    def forward(self, batched_inputs: List[Dict]) -> Dict[str, torch.Tensor]:
        """
        Args:
            batched_inputs: outputs of :class:`~aligndet_d2.data.TwoViewMapper`, each with
            ``views``.

        Returns:
            dict of losses: ``loss_con`` and the online detector's regression losses.
        """
        if not self.training:
            raise RuntimeError(
                "a pre-training model has no inference: export it with tools/export.py and "
                "fine-tune or evaluate the exported detector"
            )
        views = [[dict(d["views"][v]) for d in batched_inputs] for v in range(2)]
        for per_view in views:
            for d in per_view:
                d["instances"] = d["instances"].to(self.device)
        make_ids_unique(views)
        with torch.no_grad():
            _, k, k_ids = self.momentum.forward_pretrain(views[1], with_losses=False)
        losses, q, q_ids = self.online.forward_pretrain(views[0], with_losses=True)
        loss_con, metrics = box_contrastive_loss(
            q, q_ids, k, k_ids, self.temperature, self.gather_negatives
        )
        losses["loss_con"] = loss_con * self.loss_weight
        self._check_finite(losses)
        storage = get_event_storage()
        storage.put_scalar("con_acc", metrics["accuracy"].item())
        storage.put_scalar("con/num_queries", float((q_ids >= 0).sum()))
        return losses

    @staticmethod
    def _check_finite(losses: Dict[str, torch.Tensor]) -> None:
        values = torch.stack([v.detach().float() for v in losses.values()])
        if not torch.isfinite(values).all():
            bad = {k: v.item() for k, v in losses.items() if not torch.isfinite(v).all()}
            raise FloatingPointError(
                f"non-finite pre-training loss at iteration {get_event_storage().iter}: "
                + ", ".join(f"{k} = {v}" for k, v in bad.items())
            )

    def _load_plain_detector(self, state_dict, prefix, *args, **kwargs):
        # A checkpoint of a plain detector (no online./momentum. keys, e.g. ImageNet weights
        # converted for Detectron2) goes into the online branch.
        keys = [k for k in state_dict if k.startswith(prefix)]
        branch = (prefix + "online.", prefix + "momentum.")
        if keys and not any(k.startswith(branch) for k in keys):
            for k in keys:
                state_dict[prefix + "online." + k[len(prefix) :]] = state_dict.pop(k)
