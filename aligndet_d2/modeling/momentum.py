"""The online / momentum detector pair of box-domain pre-training (docs/DESIGN.md 2.3).

The online detector sees view 1 and gets gradients; the momentum detector, an exponential moving
average of it, sees view 2 under ``no_grad``. The loss is the box-level contrastive loss between
their ROI (or anchor / point) embeddings plus the online detector's own regression losses; it is not
symmetrised. :class:`~aligndet_d2.engine.hooks.MomentumUpdateHook` updates the copy after every
optimizer step.
"""

from __future__ import annotations

import copy
import math
from typing import Dict, List, Optional

import torch
from detectron2.utils.events import get_event_storage
from torch import nn

from ..utils.events import discarded_metrics
from .contrastive import box_contrastive_loss, overlapping_ids

__all__ = ["MomentumPair", "cosine_momentum", "initial_weight_share", "make_ids_unique"]


def cosine_momentum(iteration: int, max_iter: int, base: float = 0.996, end: float = 1.0) -> float:
    """``m = end - (end - base) * (cos(pi k / K) + 1) / 2``: ``base`` at k = 0, ``end`` at k = K."""
    return end - (end - base) * (math.cos(math.pi * iteration / max_iter) + 1) / 2


def initial_weight_share(max_iter: int, base: float = 0.996, end: float = 1.0) -> float:
    """The weight of the momentum detector's step-0 value in its value after ``max_iter`` updates.

    After the update of iteration k the momentum weights are ``m_k theta_k + (1 - m_k) theta_q``,
    so the step-0 weights (random init for the neck and heads) keep a share ``prod_k m_k`` of the
    average: about ``exp(-(1 - base) K / 2)`` for the cosine schedule. The paper's schedule (0.996
    over 88716 iterations) leaves nothing of it; a short run at 0.996 leaves most of it.
    """
    if max_iter <= 0:
        return 1.0
    ms = [cosine_momentum(k, max_iter, base, end) for k in range(max_iter)]
    return math.exp(sum(math.log(m) for m in ms)) if min(ms) > 0 else 0.0


def make_ids_unique(views: List[List[Dict]], file_names: Optional[List[str]] = None) -> None:
    """Offsets each image's ``gt_ids`` so that ids are unique in the batch and equal across views.

    Args:
        views: per view, the list of per-image dicts with ``instances.gt_ids`` (modified in place).
        file_names: per image, its file, for the error message.

    Raises:
        ValueError: when the views of an image do not hold the same ids in the same order (the
            contrastive loss would then pair boxes that are not the same proposal).
    """
    offset = 0
    for i, per_view in enumerate(zip(*views)):
        ids = [d["instances"].gt_ids for d in per_view]
        for other in ids[1:]:
            if len(other) != len(ids[0]) or not torch.equal(other, ids[0]):
                name = file_names[i] if file_names else f"image {i} of the batch"
                how = "in another order" if len(other) == len(ids[0]) else "another number of"
                raise ValueError(
                    f"{name}: the two views hold {how} proposals ({len(ids[0])} and "
                    f"{len(other)} ids); a box must be kept or dropped in both views together "
                    "(TwoViewMapper does this)"
                )
        for d in per_view:
            d["instances"].gt_ids = d["instances"].gt_ids + offset
        # Ids are indices into the image's proposal list, with gaps where a box was dropped.
        offset += int(ids[0].max()) + 1 if len(ids[0]) else 0


class MomentumPair(nn.Module):
    """Online detector + momentum copy; ``forward`` returns the pre-training losses.

    The detector must implement ``forward_pretrain(batched_inputs, with_losses) -> (losses,
    ContrastiveSamples)`` (see :class:`~aligndet_d2.modeling.rcnn.AlignDetRCNN`). The state dict
    holds both branches (``online.*`` and ``momentum.*``). Initial weights (ImageNet backbone) are
    loaded into the online branch (``train_net.py`` does it), and the momentum hook copies the
    online branch into the momentum one before the first step.

    Besides the losses it logs, per iteration: ``con_acc`` (the contrastive accuracy),
    ``con/chance`` and ``con/floor`` (the levels of :func:`box_contrastive_loss` for the loss
    ``loss_con``), ``con/num_queries``, ``con/num_negatives``, the same four over the fixed set
    (``con_fixed/loss``, ``con_fixed/acc``, ``con_fixed/chance``, ``con_fixed/floor``: see
    :class:`ContrastiveSamples`; comparable across iterations, unlike ``loss_con``) and
    ``pretrain/degenerate_boxes`` (boxes dropped by the mapper so far), and with
    ``negative_overlap_iou`` set, ``con/overlapping_ids`` (per proposal, the mean number of others
    left out of its negatives). Only the online branch's metrics are logged.
    """

    def __init__(
        self,
        *,
        detector: nn.Module,
        temperature: float = 0.5,
        loss_weight: float = 1.0,
        gather_negatives: bool = False,
        base_momentum: float = 0.996,
        negative_overlap_iou: Optional[float] = None,
    ):
        """
        Args:
            detector: the online detector (its copy becomes the momentum detector).
            temperature: contrastive temperature ``t``.
            loss_weight: weight of the contrastive loss.
            gather_negatives: add the momentum embeddings of every other process as negatives
                (the reference uses each device's own samples only).
            base_momentum: momentum at the first iteration, cosine schedule to 1.0 at the last.
                The paper's 0.996 suits its 88k iterations; a short run needs a lower value,
                or most of the momentum detector is still its initialisation at the end (the
                trainer prints the share, :func:`initial_weight_share`).
            negative_overlap_iou: an option of ours, off (None) by default: a sample is left out
                of a query's negatives when their proposals' boxes (one image) overlap with IoU
                above this value (e.g. 0.5), since near-duplicate proposals with different ids
                make the contrastive task contradictory. A deviation from the paper and the
                reference, which use every other proposal as a negative.
        """
        super().__init__()
        if not 0.0 <= base_momentum <= 1.0:
            raise ValueError(f"base_momentum={base_momentum} (allowed: 0 <= base_momentum <= 1)")
        if negative_overlap_iou is not None and not 0.0 < negative_overlap_iou < 1.0:
            raise ValueError(
                f"negative_overlap_iou={negative_overlap_iou} (allowed: None, or 0 < value < 1)"
            )
        self.online = detector
        self.momentum = copy.deepcopy(detector)
        for p in self.momentum.parameters():
            p.requires_grad_(False)
        self.temperature = temperature
        self.loss_weight = loss_weight
        self.gather_negatives = gather_negatives
        self.base_momentum = base_momentum
        self.negative_overlap_iou = negative_overlap_iou
        self.degenerate_boxes = 0  # dropped by the mapper, since this process started

    @property
    def device(self) -> torch.device:
        return self.online.device

    @torch.no_grad()
    def copy_online_to_momentum(self) -> None:
        """Makes the momentum detector an exact copy of the online one."""
        self.momentum.load_state_dict(self.online.state_dict())

    @torch.no_grad()
    def update_momentum(self, m: float) -> None:
        """``theta_k = m theta_k + (1 - m) theta_q`` on trainable parameters; buffers, and the
        parameters named in the detector's ``momentum_copied``, are copied.

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
        # Parameters the detector asks to copy rather than average (DETR's query positions).
        copied = getattr(self.online, "momentum_copied", ())
        if copied:
            online = dict(self.online.named_parameters())
            momentum = dict(self.momentum.named_parameters())
            for name in copied:
                momentum[name].copy_(online[name])
        # The reference leaves buffers as loaded; copying them keeps the copy's norm statistics
        # equal to the online ones (the same here: every norm layer is frozen or GroupNorm). One
        # fused copy: a frozen backbone has hundreds of buffers, one kernel each otherwise
        # (benchmarks/results/step_ops.md).
        buffers = list(zip(self.online.buffers(), self.momentum.buffers()))
        if buffers:
            torch._foreach_copy_([bk for _, bk in buffers], [bq for bq, _ in buffers])

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
        make_ids_unique(views, [d.get("file_name", "?") for d in batched_inputs])
        # The momentum branch runs the same Detectron2 code, which writes metrics of its own (the
        # RPN's anchor counts, ...): those are discarded, so every logged value is the online one.
        with torch.no_grad(), discarded_metrics():
            _, keys = self.momentum.forward_pretrain(views[1], with_losses=False)
        losses, queries = self.online.forward_pretrain(views[0], with_losses=True)
        excluded = None
        if self.negative_overlap_iou is not None:
            inst = [d["instances"] for d in views[0]]
            excluded = overlapping_ids(
                [i.gt_boxes for i in inst], [i.gt_ids for i in inst], self.negative_overlap_iou
            )
        loss_con, metrics, per_stage = self._contrastive(queries, keys, excluded)
        losses["loss_con"] = loss_con * self.loss_weight
        with torch.no_grad():
            fixed_loss, fixed = box_contrastive_loss(
                queries.emb[queries.fixed],
                queries.ids[queries.fixed],
                keys.emb[keys.fixed],
                keys.ids[keys.fixed],
                self.temperature,
                excluded=excluded,
            )
        self.degenerate_boxes += sum(int(d.get("degenerate_boxes", 0)) for d in batched_inputs)
        scalars = {
            "con_acc": metrics["accuracy"],
            "con/chance": metrics["chance"],
            "con/floor": metrics["floor"],
            "con/num_queries": (queries.ids >= 0).sum(),
            "con/num_negatives": metrics["num_negatives"],
            "con_fixed/loss": fixed_loss,
            "con_fixed/acc": fixed["accuracy"],
            "con_fixed/chance": fixed["chance"],
            "con_fixed/floor": fixed["floor"],
        }
        if len(per_stage) > 1:
            scalars.update({f"con/stage{k}": v for k, v in enumerate(per_stage)})
        if excluded is not None:
            # Per proposal, how many others of its image are left out of its negatives.
            scalars["con/overlapping_ids"] = excluded.sum(dim=1).float().mean()
        # The losses (for their finiteness) and every logged value in one read from the device:
        # a scalar read each would wait for the device a dozen times per step.
        read = [*losses.values(), *scalars.values()]
        values = torch.stack([v.detach().float().reshape(()) for v in read]).tolist()
        self._check_finite(dict(zip(losses, values)))
        storage = get_event_storage()
        storage.put_scalars(**dict(zip(scalars, values[len(losses) :])))
        storage.put_scalar(
            "pretrain/degenerate_boxes", float(self.degenerate_boxes), smoothing_hint=False
        )
        return losses

    def _contrastive(self, queries, keys, excluded):
        """The contrastive loss; for a cascade (samples with a ``stage``), one loss per stage,
        online stage k against momentum stage k, summed with the detector's
        ``contrastive_stage_weights``. Returns (loss, the first stage's metrics, per-stage
        losses, detached)."""
        if queries.stage is None:
            loss, metrics = box_contrastive_loss(
                queries.emb,
                queries.ids,
                keys.emb,
                keys.ids,
                self.temperature,
                self.gather_negatives,
                excluded,
            )
            return loss, metrics, [loss.detach()]
        weights = self.online.contrastive_stage_weights
        total, first, per_stage = 0.0, None, []
        for k, w in enumerate(weights):
            q, kk = queries.stage == k, keys.stage == k
            loss, metrics = box_contrastive_loss(
                queries.emb[q],
                queries.ids[q],
                keys.emb[kk],
                keys.ids[kk],
                self.temperature,
                self.gather_negatives,
                excluded,
            )
            total = total + w * loss
            if first is None:
                first = metrics
            per_stage.append(loss.detach())
        return total, first, per_stage

    @staticmethod
    def _check_finite(values: Dict[str, float]) -> None:
        """Raises FloatingPointError naming the non-finite ones of the losses' values."""
        bad = {k: v for k, v in values.items() if not math.isfinite(v)}
        if bad:
            raise FloatingPointError(
                f"non-finite pre-training loss at iteration {get_event_storage().iter}: "
                + ", ".join(f"{k} = {v}" for k, v in bad.items())
            )
