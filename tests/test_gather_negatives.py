"""Negatives gathered across processes (a 2-process gloo group on the CPU)."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from aligndet_d2.modeling.contrastive import OTHER_DEVICE_ID, box_contrastive_loss


def _data(rank):
    g = torch.Generator().manual_seed(rank)
    q = torch.randn(5, 8, generator=g)
    k = torch.randn(4 + rank, 8, generator=g)  # ranks hold different numbers of samples
    ids_q = torch.tensor([0, 0, 1, 2, -1])
    ids_k = torch.tensor([0, 1, 1, 3, 2][: 4 + rank])
    return q, ids_q, k, ids_k


def _worker(rank, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    q, iq, k, ik = _data(rank)
    loss, metrics = box_contrastive_loss(q, iq, k, ik, gather_negatives=True)
    out[rank] = (loss.item(), metrics["num_negatives"].item())
    dist.destroy_process_group()


@pytest.mark.timeout(120)
def test_gathered_negatives_match_a_single_process_computation():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = mp.Manager().dict()
    mp.spawn(_worker, args=(port, out), nprocs=2, join=True)
    for rank in range(2):
        q, iq, k, ik = _data(rank)
        other_k = _data(1 - rank)[2]
        # The same rows, with the other process's keys added as negatives that match no query.
        expected, _ = box_contrastive_loss(
            q,
            iq,
            torch.cat([k, other_k]),
            torch.cat([ik, torch.full((len(other_k),), OTHER_DEVICE_ID)]),
        )
        loss, num_negatives = out[rank]
        assert loss == pytest.approx(expected.item(), abs=1e-6)
        local, local_metrics = box_contrastive_loss(q, iq, k, ik)
        assert loss != pytest.approx(local.item(), rel=1e-3)
        # Every key of the other process is one more negative of every query.
        assert num_negatives == local_metrics["num_negatives"].item() + len(other_k)
