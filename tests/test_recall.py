"""Class-agnostic proposal recall against hand-computed values."""

import pytest
import torch

from aligndet_d2.evaluation import proposal_recall


def test_recall_hand_computed():
    gt = [torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]]), torch.zeros(0, 4)]
    props = [
        torch.tensor(
            [
                [50.0, 50.0, 60.0, 60.0],  # covers nothing
                [0.0, 0.0, 10.0, 6.0],  # IoU 0.6 with box 1
                [20.0, 20.0, 30.0, 30.0],  # IoU 1 with box 2
            ]
        ),
        torch.tensor([[0.0, 0.0, 5.0, 5.0]]),  # an image without boxes adds nothing
    ]
    r = proposal_recall(gt, props, ks=(1, 2, 3))
    assert r["num_gt"] == 2
    assert r["R@1/IoU0.5"] == 0.0 and r["AR@1"] == 0.0
    # k=2: box 1 at IoU 0.6 passes thresholds 0.5, 0.55, 0.6 (3 of 10); box 2 uncovered.
    assert r["R@2/IoU0.5"] == pytest.approx(50.0)
    assert r["AR@2"] == pytest.approx(100 * (3 / 10) / 2)
    # k=3: box 2 passes all 10.
    assert r["R@3/IoU0.5"] == pytest.approx(100.0)
    assert r["AR@3"] == pytest.approx(100 * (3 / 10 + 1) / 2)


def test_recall_mismatched_lists():
    with pytest.raises(ValueError, match="2 images of ground truth, 1 of proposals"):
        proposal_recall([torch.zeros(0, 4)] * 2, [torch.zeros(0, 4)])
