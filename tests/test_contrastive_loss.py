import math

import pytest
import torch
import torch.nn.functional as F
from detectron2.structures import Boxes

from aligndet_d2.modeling.contrastive import (
    BACKGROUND_ID,
    OTHER_DEVICE_ID,
    box_contrastive_loss,
    overlapping_ids,
)


def _reference_loop(q, q_ids, k, k_ids, t, excluded_pairs=()):
    """The reference's per-label loop (AlignDet's ContrastiveLoss), written independently; ids
    (i, j) in ``excluded_pairs`` leave j out of i's negatives (our option)."""
    total, n = 0.0, 0
    for label in torch.unique(q_ids):
        if label < 0:
            continue
        query = F.normalize(q[q_ids == label])
        key = F.normalize(k[k_ids == label]) if (k_ids == label).any() else query
        out = [label.item()] + [j for i, j in excluded_pairs if i == label.item()]
        q_neg = torch.tensor([i not in out for i in q_ids.tolist()])
        k_neg = torch.tensor([i not in out for i in k_ids.tolist()])
        neg = F.normalize(torch.cat([q[q_neg], k[k_neg]])).detach()
        rows = []
        for a in query:
            for b in key:
                logits = torch.cat([(a @ b)[None], neg @ a]) / t
                rows.append(-torch.log_softmax(logits, 0)[0])
        total = total + torch.stack(rows).mean()
        n += 1
    return total / n


def test_two_instances_by_hand():
    # Unit vectors in 2-D. Instance 0: query e1, key at 60 degrees; instance 1: query e2, key e2.
    q = torch.tensor([[1.0, 0.0], [0.0, 2.0]])  # norms differ: the loss normalises
    k = torch.tensor([[0.5, math.sqrt(3) / 2], [0.0, 1.0]])
    ids = torch.tensor([0, 1])
    t = 0.5
    loss, metrics = box_contrastive_loss(q, ids, k, ids, temperature=t)
    # Instance 0: positive cos 0.5; negatives: q1 = e2 (cos 0) and k1 = e2 (cos 0).
    l0 = -math.log(math.exp(0.5 / t) / (math.exp(0.5 / t) + 2 * math.exp(0.0)))
    # Instance 1: positive cos 1; negatives: q0 = e1 (cos 0), k0 (cos sqrt(3)/2).
    l1 = -math.log(
        math.exp(1 / t) / (math.exp(1 / t) + math.exp(0.0) + math.exp(math.sqrt(3) / 2 / t))
    )
    assert loss.item() == pytest.approx((l0 + l1) / 2, rel=1e-6)
    # Instance 0's key (cos 0.5) beats its negatives (cos 0); instance 1's key (1) beats sqrt(3)/2.
    assert metrics["accuracy"].item() == 1.0


def test_mean_over_rows_then_instances_and_self_key_fallback():
    torch.manual_seed(0)
    q = torch.randn(6, 8, requires_grad=True)
    q_ids = torch.tensor([0, 0, 1, 2, 2, BACKGROUND_ID])
    k = torch.randn(5, 8)
    k_ids = torch.tensor([0, 1, 1, 1, BACKGROUND_ID])  # id 2 has no key: its queries are the keys
    loss, _ = box_contrastive_loss(q, q_ids, k, k_ids, temperature=0.5)
    expected = _reference_loop(q, q_ids, k, k_ids, 0.5)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # Gradients flow to the queries, including through the self-key of id 2, not to background.
    loss.backward()
    assert q.grad[:5].abs().sum(1).gt(0).all() and q.grad[5].abs().sum() == 0


def test_negatives_are_detached():
    torch.manual_seed(1)
    q = torch.randn(4, 3, requires_grad=True)
    ids = torch.tensor([0, 1, 2, 3])
    k = torch.randn(4, 3)
    loss, _ = box_contrastive_loss(q, ids, k, ids)
    (g,) = torch.autograd.grad(loss, q)
    # Moving query 0 changes only instance 0's term (as a query); as a negative of the others it is
    # detached. So the gradient on q[0] equals that of instance 0's own term / 4.
    q0 = q.detach().clone().requires_grad_(True)
    neg = F.normalize(torch.cat([q.detach()[1:], k[1:]]))
    a = F.normalize(q0[:1])[0]
    b = F.normalize(k[:1])[0]
    row = -torch.log_softmax(torch.cat([(a @ b)[None], neg @ a]) / 0.5, 0)[0]
    (g0,) = torch.autograd.grad(row / 4, q0)
    assert torch.allclose(g[0], g0[0], atol=1e-6)


def test_no_instance_gives_zero_connected_loss():
    q = torch.randn(3, 4, requires_grad=True)
    loss, metrics = box_contrastive_loss(
        q, torch.full((3,), BACKGROUND_ID), torch.randn(2, 4), torch.tensor([0, 1])
    )
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()


def test_large_batches_are_chunked_consistently(monkeypatch):
    import aligndet_d2.modeling.contrastive as c

    torch.manual_seed(2)
    q, k = torch.randn(50, 16), torch.randn(40, 16)
    q_ids, k_ids = torch.randint(0, 20, (50,)), torch.randint(0, 25, (40,))
    full, m_full = box_contrastive_loss(q, q_ids, k, k_ids)
    monkeypatch.setattr(c, "_CHUNK", 7)
    chunked, m_chunked = box_contrastive_loss(q, q_ids, k, k_ids)
    assert chunked.item() == pytest.approx(full.item(), rel=1e-6)
    assert m_chunked["accuracy"].item() == pytest.approx(m_full["accuracy"].item())


def test_chance_and_floor_levels_by_hand():
    t = 0.5
    # Every embedding equal: each row scores log(1 + N), the chance level, with N = 3 negatives per
    # row (2 ids: the other id's query and key, plus background).
    q = torch.ones(2, 4)
    k = torch.ones(3, 4)
    q_ids, k_ids = torch.tensor([0, 1]), torch.tensor([0, 1, BACKGROUND_ID])
    loss, m = box_contrastive_loss(q, q_ids, k, k_ids, temperature=t)
    assert m["num_negatives"].item() == 3
    assert m["chance"].item() == pytest.approx(math.log(4))
    assert loss.item() == pytest.approx(m["chance"].item())
    assert m["floor"].item() == pytest.approx(math.log(1 + 3 * math.exp(-1 / t)))
    # Keys equal to their queries, negatives orthogonal: the floor is reached.
    e = torch.eye(4)
    q, k = e[:2], torch.stack([e[0], e[1], e[2]])
    loss, m = box_contrastive_loss(q, q_ids, k, k_ids, temperature=t)
    assert loss.item() == pytest.approx(m["floor"].item(), rel=1e-6)
    assert m["accuracy"].item() == 1.0


def test_under_autocast_the_loss_is_computed_in_float32():
    torch.manual_seed(3)
    q = torch.randn(30, 16).bfloat16()
    k = torch.randn(25, 16).bfloat16()
    q_ids, k_ids = torch.randint(-1, 8, (30,)), torch.randint(-1, 8, (25,))
    # The same bfloat16 inputs, everything after them in float32.
    expected, expected_m = box_contrastive_loss(q.float(), q_ids, k.float(), k_ids)
    qb = q.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, m = box_contrastive_loss(qb, q_ids, k, k_ids)
    assert loss.dtype == torch.float32 and m["accuracy"].dtype == torch.float32
    # Similarities computed in bfloat16 (8-bit mantissa) would be off by ~1e-3.
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert m["accuracy"].item() == expected_m["accuracy"].item()
    loss.backward()
    assert qb.grad.dtype == torch.bfloat16 and torch.isfinite(qb.grad.float()).all()


def test_excluded_ids_leave_the_negatives_by_hand():
    # The two-instance case above, with id 1 left out of id 0's negatives (not the reverse).
    q = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    k = torch.tensor([[0.5, math.sqrt(3) / 2], [0.0, 1.0]])
    ids = torch.tensor([0, 1])
    excluded = torch.tensor([[False, True], [False, False]])
    loss, metrics = box_contrastive_loss(q, ids, k, ids, temperature=0.5, excluded=excluded)
    l0 = 0.0  # no negatives left: -log(e^s / e^s)
    l1 = -math.log(
        math.exp(2.0) / (math.exp(2.0) + math.exp(0.0) + math.exp(math.sqrt(3) / 2 / 0.5))
    )
    assert loss.item() == pytest.approx((l0 + l1) / 2, rel=1e-6)
    assert metrics["num_negatives"].item() == pytest.approx((0 + 2) / 2)


def test_excluded_ids_against_the_reference_loop():
    torch.manual_seed(3)
    q = torch.randn(9, 8, requires_grad=True)
    q_ids = torch.tensor([0, 0, 1, 2, 2, 3, 4, BACKGROUND_ID, BACKGROUND_ID])
    k = torch.randn(8, 8)
    # Id 2 has no key; background and other processes' samples stay negatives of every id.
    k_ids = torch.tensor([0, 1, 1, 3, 4, 4, BACKGROUND_ID, OTHER_DEVICE_ID])
    pairs = [(0, 1), (1, 0), (2, 3), (3, 2), (4, 0)]
    excluded = torch.zeros(5, 5, dtype=torch.bool)
    for i, j in pairs:
        excluded[i, j] = True
    loss, _ = box_contrastive_loss(q, q_ids, k, k_ids, temperature=0.5, excluded=excluded)
    expected = _reference_loop(q, q_ids, k, k_ids, 0.5, pairs)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # Nothing excluded is the loss without the option.
    none, _ = box_contrastive_loss(q, q_ids, k, k_ids, excluded=torch.zeros(5, 5, dtype=bool))
    assert none.item() == pytest.approx(box_contrastive_loss(q, q_ids, k, k_ids)[0].item())
    with pytest.raises(ValueError, match="square matrix over the instance ids 0..4"):
        box_contrastive_loss(q, q_ids, k, k_ids, excluded=torch.zeros(4, 4, dtype=torch.bool))


def test_overlapping_ids_within_an_image_only():
    # Image 1: boxes 0 and 1 overlap (IoU 0.9), box 2 is apart; image 2 (ids 3, 4, 5 after the
    # batch offset) repeats box 0 of image 1, which does not overlap across images.
    b1 = Boxes(torch.tensor([[0, 0, 10, 10], [0, 0, 10, 9], [20, 20, 30, 30]], dtype=torch.float))
    b2 = Boxes(torch.tensor([[0, 0, 10, 10], [0, 0, 10, 4], [50, 50, 60, 60]], dtype=torch.float))
    out = overlapping_ids([b1, b2], [torch.tensor([0, 1, 2]), torch.tensor([3, 5, 6])], 0.5)
    assert out.shape == (7, 7)
    assert sorted(map(tuple, out.nonzero().tolist())) == [(0, 1), (1, 0)]
    # IoU 0.4 (boxes 3 and 5) is above 0.3.
    out = overlapping_ids([b2], [torch.tensor([3, 5, 6])], 0.3)
    assert sorted(map(tuple, out.nonzero().tolist())) == [(3, 5), (5, 3)]
    with pytest.raises(ValueError, match="iou_threshold=1.0"):
        overlapping_ids([b1], [torch.tensor([0, 1, 2])], 1.0)
