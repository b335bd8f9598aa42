"""The box-level contrastive loss of AlignDet (DESIGN.md 2.5), shared by every detector.

Samples are embeddings with an instance id: ids >= 0 are proposals (unique across the batch), and
:data:`BACKGROUND_ID` marks background samples (anchors / points of the dense detectors), which are
negatives only. For each instance id ``i`` present among the online samples:

- queries ``q``: the normalised online embeddings with id ``i`` (gradients flow);
- keys ``p``: the normalised momentum embeddings with id ``i`` (the other view); when there are
none,
  the queries themselves serve as keys, not detached, as the reference does;
- negatives ``u``: every other sample of both views (other ids and background), detached.

Every (query, key) pair is one row ``l = -log(exp(q.p/t) / (exp(q.p/t) + sum_u exp(q.u/t)))``;
``L_i`` is the mean over its rows and the loss is the mean of ``L_i`` over instances. (The paper's
equation has a typo; this is what the reference code computes.)
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from detectron2.utils import comm
from torch import nn

__all__ = ["BACKGROUND_ID", "OTHER_DEVICE_ID", "box_contrastive_loss", "ProjectionMLP"]

# Ids are int64 and proposals are numbered from 0, so negative sentinels never collide with an id
# (the reference uses 256 for the background, which a 257th proposal on one device collides with).
BACKGROUND_ID = -1
# Negatives gathered from other processes: never a positive of a local query.
OTHER_DEVICE_ID = -2

# Queries are processed in chunks of this many rows to bound the (queries x samples) similarity
# matrices (the paper setting has up to 4096 ROIs per image).
_CHUNK = 4096


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
) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """Box-level contrastive loss between online and momentum samples.

    Args:
        q: (Nq, D) online embeddings (not normalised).
        q_ids: (Nq,) int64 instance ids, or :data:`BACKGROUND_ID`.
        k: (Nk, D) momentum embeddings of the other view.
        k_ids: (Nk,) int64 instance ids, or :data:`BACKGROUND_ID`.
        temperature: softmax temperature ``t``.
        gather_negatives: also use the momentum samples of every other process as negatives
            (each process holds other images, so they are never positives).

    Returns:
        (scalar loss, metrics) where metrics holds ``accuracy``: the fraction of (query, key) rows,
        keys from the other view only, whose key scores above every negative. The loss is 0
        (connected to ``q``) when no online sample has an instance id.
    """
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
        zero = q.sum() * 0.0
        return zero, {"accuracy": zero.detach()}

    n_q = len(qn)  # the keys start at this column of the pool
    row_sum = Q.new_zeros(len(Q))  # sum over a query's rows
    row_cnt = Q.new_zeros(len(Q))
    correct = Q.new_zeros(())
    n_cross = Q.new_zeros(())
    for s in range(0, len(Q), _CHUNK):
        qc, idc = Q[s : s + _CHUNK], Q_ids[s : s + _CHUNK]
        # Similarities to every sample of both views; gradients flow through the query side only.
        sim = qc @ pool.T / temperature  # (c, M)
        neg = sim.masked_fill(pool_ids[None, :] == idc[:, None], float("-inf"))
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
        row_sum = row_sum.index_add(0, a + s, rows)
        row_cnt = row_cnt.index_add(0, a + s, torch.ones_like(rows))
        with torch.no_grad():
            max_neg = neg.max(dim=1).values
            n_key = len(b)
            correct += (pair_sim[:n_key] > max_neg[a[:n_key]]).sum()
            n_cross += n_key

    per_id_sum = Q.new_zeros(len(labels)).index_add(0, inverse, row_sum)
    per_id_cnt = Q.new_zeros(len(labels)).index_add(0, inverse, row_cnt)
    loss = (per_id_sum / per_id_cnt).mean()
    accuracy = correct / n_cross.clamp(min=1)
    return loss, {"accuracy": accuracy}
