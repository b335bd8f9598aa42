"""The box-level contrastive loss of AlignDet (docs/DESIGN.md 2.5), shared by every detector.

Samples are embeddings with an instance id: ids >= 0 are proposals (unique across the batch), and
:data:`BACKGROUND_ID` marks background samples (anchors / points of the dense detectors), which are
negatives only. For each instance id ``i`` present among the online samples:

- queries ``q``: the normalised online embeddings with id ``i`` (gradients flow);
- keys ``p``: the normalised momentum embeddings with id ``i`` (the other view); when there are
  none, the queries themselves serve as keys, not detached, as the reference does;
- negatives ``u``: every other sample of both views (other ids and background), detached.

Every (query, key) pair is one row ``l = -log(exp(q.p/t) / (exp(q.p/t) + sum_u exp(q.u/t)))``;
``L_i`` is the mean over its rows and the loss is the mean of ``L_i`` over instances. (The paper's
equation has a typo; this is what the reference code computes.)

An option of ours, off by default (a deviation from the paper and the reference): ``excluded``, an
(n, n) bool matrix over instance ids, leaves the samples of id ``j`` out of the negatives of id
``i``'s queries where ``excluded[i, j]``. :func:`overlapping_ids` builds it from the proposals'
boxes: selective search returns near-duplicate boxes of one object under different ids, and with
both in the negatives the task asks the model to tell apart two boxes of the same thing.

The loss runs in float32 with autocast off, whatever the caller's precision: under AMP the
similarity matrix would otherwise be computed in float16 (bfloat16 on the CPU), whose 8-10 bit
mantissa cannot separate cosines a few 1e-3 apart at temperature 0.5.

Reading the loss: with ``N`` negatives per row, a model whose embeddings carry no information
scores ``log(1 + N)`` (every similarity equal: the *chance* level), and one whose keys match
exactly while the negatives are orthogonal scores ``log(1 + N e^(-1/t))`` (the *floor*, about the
best reachable with many negatives). Both are returned with the loss, aggregated as it is.
"""

from __future__ import annotations

import math
from typing import Dict, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.structures import Boxes, pairwise_iou
from detectron2.utils import comm
from torch import nn

__all__ = [
    "BACKGROUND_ID",
    "OTHER_DEVICE_ID",
    "ContrastiveSamples",
    "box_contrastive_loss",
    "overlapping_ids",
    "ProjectionMLP",
]

# Ids are int64 and proposals are numbered from 0, so negative sentinels never collide with an id
# (the reference uses 256 for the background, which a 257th proposal on one device collides with).
BACKGROUND_ID = -1
# Negatives gathered from other processes: never a positive of a local query.
OTHER_DEVICE_ID = -2

# Queries are processed in chunks of this many rows to bound the (queries x samples) similarity
# matrices (the paper setting has up to 4096 ROIs per image).
_CHUNK = 4096


class ContrastiveSamples(NamedTuple):
    """What a detector's pre-training forward hands to the contrastive loss.

    Attributes:
        emb: (K, D) embeddings (not normalised).
        ids: (K,) int64 instance ids, :data:`BACKGROUND_ID` for background samples.
        fixed: (K,) bool, the samples of the *fixed set*: one per proposal, chosen by the boxes'
            geometry alone, not by what the model has learned (R-CNN: the pseudo-GT boxes used as
            ROIs, never the RPN's proposals; RetinaNet: the proposal's sampled anchor of highest
            IoU; FCOS: its sampled point of highest centerness). A loss over the fixed set is
            comparable across iterations, the full loss is not (the R-CNN ROI set grows as the RPN
            learns).
        stage: (K,) int64 cascade stage of each sample, or None (one stage): the contrastive
            loss then pairs samples of the same stage only.
    """

    emb: torch.Tensor
    ids: torch.Tensor
    fixed: torch.Tensor
    stage: Optional[torch.Tensor] = None


class ProjectionMLP(nn.Sequential):
    """``Linear(in, hidden) -> ReLU -> Linear(hidden, out)``: the projection replacing a classifier.

    Args:
        in_dim: input features.
        hidden_dim: hidden features.
        out_dim: embedding size.
        init_std: initialise the weights from N(0, init_std) and the biases to 0 (the reference's
            classifier init, 0.01); None keeps PyTorch's default init.
    """

    def __init__(
        self, in_dim: int, hidden_dim: int, out_dim: int = 256, init_std: Optional[float] = None
    ):
        super().__init__(
            nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim)
        )
        if init_std is not None:
            for layer in (self[0], self[2]):
                nn.init.normal_(layer.weight, std=init_std)
                nn.init.constant_(layer.bias, 0.0)


@torch.no_grad()
def _gather_negatives(k: torch.Tensor) -> torch.Tensor:
    """Momentum embeddings of every other process (rows of a different length are padded)."""
    sizes = comm.all_gather(k.shape[0])
    pad = max(sizes) - k.shape[0]
    padded = F.pad(k, (0, 0, 0, pad))
    gathered = [torch.empty_like(padded) for _ in sizes]
    torch.distributed.all_gather(gathered, padded.contiguous())
    rank = comm.get_rank()
    return torch.cat([g[:n] for r, (g, n) in enumerate(zip(gathered, sizes)) if r != rank])


def box_contrastive_loss(
    q: torch.Tensor,
    q_ids: torch.Tensor,
    k: torch.Tensor,
    k_ids: torch.Tensor,
    temperature: float = 0.5,
    gather_negatives: bool = False,
    excluded: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """Box-level contrastive loss between online and momentum samples, in float32.

    Args:
        q: (Nq, D) online embeddings (not normalised), any floating dtype.
        q_ids: (Nq,) int64 instance ids, or :data:`BACKGROUND_ID`.
        k: (Nk, D) momentum embeddings of the other view.
        k_ids: (Nk,) int64 instance ids, or :data:`BACKGROUND_ID`.
        temperature: softmax temperature ``t``.
        gather_negatives: also use the momentum samples of every other process as negatives
            (each process holds other images, so they are never positives).
        excluded: optional (n, n) bool matrix over instance ids, n above every id of ``q_ids``
            and ``k_ids``: ``excluded[i, j]`` leaves the samples of id ``j`` out of the
            negatives of id ``i`` (see :func:`overlapping_ids`). Background samples and other
            processes' samples are always negatives.

    Returns:
        (scalar float32 loss, metrics). The metrics are detached scalars: ``accuracy``, the
        fraction of (query, key) rows, keys from the other view only, whose key scores above
        every negative; ``chance`` and ``floor``, the loss at ``log(1 + N)`` and
        ``log(1 + N e^(-1/t))`` per row for its ``N`` negatives, averaged as the loss is;
        ``num_negatives``, the mean ``N`` over queries. The loss is 0 (connected to ``q``) when no
        online sample has an instance id.
    """
    with torch.autocast(device_type=q.device.type, enabled=False):
        return _box_contrastive_loss(q, q_ids, k, k_ids, temperature, gather_negatives, excluded)


def _box_contrastive_loss(q, q_ids, k, k_ids, temperature, gather_negatives, excluded):
    qn = F.normalize(q.float(), dim=1)
    kn = F.normalize(k.float().detach(), dim=1)
    pool, pool_ids = torch.cat([qn.detach(), kn]), torch.cat([q_ids, k_ids])
    if gather_negatives and comm.get_world_size() > 1:
        others = _gather_negatives(kn)
        pool = torch.cat([pool, others])
        pool_ids = torch.cat([pool_ids, pool_ids.new_full((len(others),), OTHER_DEVICE_ID)])

    fg = q_ids >= 0
    Q, Q_ids = qn[fg], q_ids[fg]
    labels, inverse = torch.unique(Q_ids, return_inverse=True)
    if len(labels) == 0:
        zero = q.float().sum() * 0.0
        nothing = zero.detach()
        return zero, {name: nothing for name in ("accuracy", "chance", "floor", "num_negatives")}

    n_q = len(qn)  # the keys start at this column of the pool
    if excluded is not None:
        top = int(max(q_ids.max(), k_ids.max() if len(k_ids) else -1))
        if excluded.dim() != 2 or excluded.shape[0] != excluded.shape[1] or top >= len(excluded):
            raise ValueError(
                f"excluded: a square matrix over the instance ids 0..{top} was expected, got "
                f"shape {tuple(excluded.shape)}"
            )
        excluded = excluded.to(device=pool_ids.device, dtype=torch.bool)
        # Column index of every pool sample in ``excluded``; background and other-device samples
        # point at a column of False, so they are never excluded.
        excluded = F.pad(excluded, (0, 1))
        pool_col = torch.where(pool_ids >= 0, pool_ids, excluded.shape[1] - 1)
    # Per query: the sums over its rows of the loss, of the chance and floor levels, and the count.
    row_stats = Q.new_zeros(len(Q), 4)
    n_neg_sum = Q.new_zeros(())
    correct = Q.new_zeros(())
    n_cross = Q.new_zeros(())
    floor_factor = math.exp(-1.0 / temperature)
    for s in range(0, len(Q), _CHUNK):
        qc, idc = Q[s : s + _CHUNK], Q_ids[s : s + _CHUNK]
        # Similarities to every sample of both views; gradients flow through the query side only.
        sim = qc @ pool.T / temperature  # (c, M)
        not_neg = pool_ids[None, :] == idc[:, None]
        if excluded is not None:
            not_neg |= excluded[idc[:, None], pool_col[None, :]]
        neg = sim.masked_fill(not_neg, float("-inf"))
        neg_lse = torch.logsumexp(neg, dim=1)  # log sum_u exp(q.u / t); -inf without negatives
        # Rows: each (query, key of the same id from the other view) pair; only those are gathered,
        # the rest of the matrix is never touched again.
        pos_k = k_ids[None, :] == idc[:, None]  # (c, Nk)
        a, b = torch.nonzero(pos_k, as_tuple=True)
        pair_sim = sim[a, n_q + b]
        # Ids with no key in the other view: the queries of that id are the keys (not detached).
        no_key = torch.nonzero(~pos_k.any(dim=1)).squeeze(1)
        if len(no_key):
            a2, b2 = torch.nonzero(Q_ids[None, :] == idc[no_key, None], as_tuple=True)
            a2 = no_key[a2]
            a = torch.cat([a, a2])
            pair_sim = torch.cat([pair_sim, (qc[a2] * Q[b2]).sum(dim=1) / temperature])
        # -log(e^s / (e^s + e^n)) = softplus(n - s); no negatives at all gives 0.
        rows = F.softplus(neg_lse[a] - pair_sim)
        with torch.no_grad():
            n_neg = (len(pool) - not_neg.sum(dim=1)).float()
            levels = torch.stack(
                [
                    torch.log1p(n_neg[a]),
                    torch.log1p(n_neg[a] * floor_factor),
                    torch.ones_like(rows),
                ],
                dim=1,
            )
            n_neg_sum += n_neg.sum()
        row_stats = row_stats.index_add(0, a + s, torch.cat([rows[:, None], levels], dim=1))
        with torch.no_grad():
            max_neg = neg.max(dim=1).values
            n_key = len(b)
            correct += (pair_sim[:n_key] > max_neg[a[:n_key]]).sum()
            n_cross += n_key

    per_id = Q.new_zeros(len(labels), 4).index_add(0, inverse, row_stats)
    per_id_mean = per_id[:, :3] / per_id[:, 3:]  # loss, chance, floor: mean over an id's rows
    loss = per_id_mean[:, 0].mean()
    levels = per_id_mean[:, 1:].detach().mean(dim=0)
    metrics = {
        "accuracy": correct / n_cross.clamp(min=1),
        "chance": levels[0],
        "floor": levels[1],
        "num_negatives": n_neg_sum / len(Q),
    }
    return loss, metrics


@torch.no_grad()
def overlapping_ids(
    boxes: Sequence[Boxes], ids: Sequence[torch.Tensor], iou_threshold: float
) -> torch.Tensor:
    """Which instance ids' boxes overlap, for ``box_contrastive_loss(excluded=...)``.

    Args:
        boxes: per image, its proposals' boxes in one view (IoU does not change with the views'
            resize and flip, so one view is enough).
        ids: per image, the (N,) int64 instance ids of those boxes, unique across the batch.
        iou_threshold: boxes of one image whose IoU is above this overlap; boxes of different
            images never do.

    Returns:
        (n, n) bool matrix, n = the largest id + 1: ``[i, j]`` is True when ``i != j`` and the boxes
        of ids ``i`` and ``j`` overlap.
    """
    if not 0.0 < iou_threshold < 1.0:
        raise ValueError(f"iou_threshold={iou_threshold} (allowed: 0 < iou_threshold < 1)")
    n = max((int(i.max()) + 1 for i in ids if len(i)), default=0)
    device = ids[0].device if len(ids) else "cpu"
    out = torch.zeros(n, n, dtype=torch.bool, device=device)
    for b, i in zip(boxes, ids):
        if len(i):
            out[i[:, None], i[None, :]] = pairwise_iou(b, b) > iou_threshold
    out.fill_diagonal_(False)
    return out
