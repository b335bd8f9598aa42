import math

import pytest
import torch
from detectron2.structures import Boxes, Instances

from aligndet_d2.modeling.momentum import MomentumPair, cosine_momentum, make_ids_unique


def test_cosine_momentum_schedule():
    assert cosine_momentum(0, 100) == pytest.approx(0.996)
    assert cosine_momentum(50, 100) == pytest.approx(0.998)
    assert cosine_momentum(100, 100) == pytest.approx(1.0)
    # m = 1 - (1 - 0.996) (cos(pi k / K) + 1) / 2
    k, K = 17, 60
    assert cosine_momentum(k, K) == pytest.approx(1 - 0.004 * (math.cos(math.pi * k / K) + 1) / 2)
    ms = [cosine_momentum(i, 60) for i in range(61)]
    assert all(a < b for a, b in zip(ms, ms[1:]))


class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 2)
        self.frozen = torch.nn.Linear(2, 2)
        self.frozen.requires_grad_(False)
        self.register_buffer("stat", torch.zeros(2))


def test_momentum_update_formula_and_buffers():
    pair = MomentumPair(detector=_Tiny())
    assert all(not p.requires_grad for p in pair.momentum.parameters())
    with torch.no_grad():
        pair.online.lin.weight.add_(1.0)
        pair.online.stat.fill_(5.0)
    q, k0 = pair.online.lin.weight.clone(), pair.momentum.lin.weight.clone()
    pair.update_momentum(0.9)
    torch.testing.assert_close(pair.momentum.lin.weight, 0.9 * k0 + 0.1 * q)
    torch.testing.assert_close(pair.momentum.stat, torch.full((2,), 5.0))
    pair.copy_online_to_momentum()
    for a, b in zip(pair.online.state_dict().values(), pair.momentum.state_dict().values()):
        assert torch.equal(a, b)


def test_plain_checkpoint_loads_into_online_branch():
    pair = MomentumPair(detector=_Tiny())
    plain = {k: torch.full_like(v, 3.0) for k, v in _Tiny().state_dict().items()}
    pair.load_state_dict(plain, strict=False)
    assert torch.equal(pair.online.lin.weight, torch.full((2, 3), 3.0))
    assert not torch.equal(pair.momentum.lin.weight, pair.online.lin.weight)


def _view(n, h=64, w=64):
    inst = Instances((h, w))
    inst.gt_boxes = Boxes(torch.tensor([[0.0, 0, 32, 32]] * n))
    inst.gt_ids = torch.arange(n)
    return {"image": torch.zeros(3, h, w, dtype=torch.uint8), "instances": inst}


def test_ids_unique_across_a_batch_and_equal_across_views():
    views = [[_view(3), _view(2)], [_view(3), _view(2)]]
    make_ids_unique(views)
    for v in views:
        assert [d["instances"].gt_ids.tolist() for d in v] == [[0, 1, 2], [3, 4]]
