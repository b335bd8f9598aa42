"""Every detector's pre-training, end to end on real images: ids aligned, AMP, metrics logged once.

Alignment: with two identical views and the momentum detector equal to the online one, each query
has a twin among its keys (the same box in the other view) with cosine 1, so the contrastive
accuracy is 1 when each id has one sample per view (R-CNN: the pseudo-GT boxes as the only ROIs;
RetinaNet / FCOS: one positive anchor / point per id); with view 2's boxes shuffled inside each
image the twin carries another id and is a negative, so the accuracy falls to about 0. Anything that
pairs embeddings with the wrong ids (the reference's level-major flattening, an off-by-one offset)
breaks the first; a loss that ignores ids breaks the second.
"""

import numpy as np
import pytest
import torch
from conftest import pretrain_cfg
from detectron2.config import instantiate
from detectron2.structures import Boxes
from detectron2.utils.events import EventStorage

TESTED = ["faster_rcnn", "retinanet", "fcos"]


def _cfg(det, extra=()):
    return pretrain_cfg(det, ["dataloader.train.mapper.max_proposals=8", *extra])


def _batches(cfg, n, seed=0):
    np.random.seed(seed)
    torch.manual_seed(seed)
    it = iter(instantiate(cfg.dataloader.train))
    return [next(it) for _ in range(n)]


def _gt_rois_only(detector):
    """The RPN still trains, but hands no proposals on: the ROIs are the pseudo-GT boxes alone."""
    rpn = detector.proposal_generator
    forward = rpn.forward

    def without_proposals(images, features, gt_instances=None):
        proposals, losses = forward(images, features, gt_instances)
        return [p[:0] for p in proposals], losses

    rpn.forward = without_proposals


def _one_sample_per_id(detector):
    """The sampler keeps, of each id's positives, the anchor / point with the lowest index (the same
    one in identical views), and every background sample."""
    sample = detector._sample

    def first_of_each_id(ids, valid):
        keep = sample(ids, valid)
        kept_ids = ids.reshape(-1)[keep]
        pos, pos_ids = keep[kept_ids >= 0], kept_ids[kept_ids >= 0]
        first = [pos[pos_ids == i].min() for i in pos_ids.unique()]
        return torch.cat([torch.stack(first), keep[kept_ids < 0]])

    detector._sample = first_of_each_id


def _shuffle_view2(batch):
    """Rolls view 2's boxes by one inside each image: every box then carries another box's id."""
    for d in batch:
        inst = d["views"][1]["instances"]
        assert len(inst) >= 2
        inst.gt_boxes = Boxes(inst.gt_boxes.tensor.roll(1, dims=0))


@pytest.fixture(scope="module", params=TESTED)
def identical_views(request):
    det = request.param
    cfg = _cfg(
        det,
        [
            "dataloader.train.mapper.flip_prob=0.0",
            "dataloader.train.mapper.photometric_ops=[]",
        ],
    )
    torch.manual_seed(0)
    pair = instantiate(cfg.model).train()
    pair.copy_online_to_momentum()
    for branch in (pair.online, pair.momentum):
        (_gt_rois_only if det == "faster_rcnn" else _one_sample_per_id)(branch)
    batches = _batches(cfg, 3)
    for batch in batches:
        for d in batch:
            a, b = d["views"]
            assert torch.equal(a["image"], b["image"])
    return det, pair, batches


def _accuracy(pair, batch):
    with EventStorage() as storage, torch.no_grad():
        pair(batch)
        return storage.latest()["con_acc"][0], storage.latest()["con/num_queries"][0]


def test_identical_views_give_accuracy_one(identical_views):
    det, pair, batches = identical_views
    for batch in batches:
        acc, n = _accuracy(pair, batch)
        assert n >= 4 and acc == 1.0, (det, acc, n)


def test_shuffled_ids_give_accuracy_near_zero(identical_views):
    det, pair, batches = identical_views
    for batch in batches:
        _shuffle_view2(batch)
        acc, n = _accuracy(pair, batch)
        assert n >= 4 and acc < 0.05, (det, acc, n)


@pytest.mark.parametrize("det", TESTED)
def test_a_step_under_bfloat16_autocast(det):
    """What AMPTrainer does on a GPU (forward under autocast, backward and step outside), on the CPU
    in bfloat16: finite losses, the contrastive one in float32, finite updated weights."""
    cfg = _cfg(det)
    torch.manual_seed(0)
    pair = instantiate(cfg.model).train()
    pair.copy_online_to_momentum()
    (batch,) = _batches(cfg, 1)
    cfg.optimizer.params.model = pair
    opt = instantiate(cfg.optimizer)
    before = [p.detach().clone() for p in pair.online.parameters() if p.requires_grad]
    with EventStorage():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            losses = pair(batch)
        assert losses["loss_con"].dtype == torch.float32
        assert all(torch.isfinite(v) for v in losses.values()), losses
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
        pair.update_momentum(0.99)
    after = [p.detach() for p in pair.online.parameters() if p.requires_grad]
    assert all(torch.isfinite(p).all() for p in after)
    assert sum(not torch.equal(a, b) for a, b in zip(before, after)) > len(after) // 2


@pytest.mark.parametrize("det", TESTED)
def test_every_metric_is_logged_once_per_step_from_the_online_branch(det):
    cfg = _cfg(det, ["dataloader.train.mapper.short_edge_lengths=[160,256]"])
    torch.manual_seed(0)
    pair = instantiate(cfg.model).train()
    (batch,) = _batches(cfg, 1, seed=1)
    # Views of different sizes: the two branches' sample counts differ.
    assert any(d["views"][0]["image"].shape != d["views"][1]["image"].shape for d in batch)
    with EventStorage() as storage:
        pair(batch)
        histories = storage.histories()
    twice = [k for k, h in histories.items() if len(h.values()) != 1]
    assert not twice, f"written more than once in one step: {twice}"
    latest = storage.latest()
    assert {"con_acc", "con_fixed/loss", "con_fixed/acc", "con/chance", "con/floor"} <= set(latest)
    assert latest["pretrain/degenerate_boxes"][0] == 0
    if det == "faster_rcnn":
        # Every online ROI is a query: the logged ROI count is the online branch's.
        fg = latest["roi_head/num_fg_samples"][0]
        assert fg == latest["con/num_queries"][0] / len(batch)
    else:
        assert "pretrain/images_without_positives" in latest
