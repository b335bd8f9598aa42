"""Pre-training of Faster R-CNN on real images: sampling, frozen backbone, steps, bad input."""

import logging

import numpy as np
import pytest
import torch
from conftest import Args, small_pretrain_cfg
from detectron2.config import instantiate
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from aligndet_d2.engine.train_loop import build_trainer
from aligndet_d2.modeling import ContrastiveROIHeads, MomentumPair, cosine_momentum


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    return small_pretrain_cfg(tmp_path_factory.mktemp("pretrain"))


@pytest.fixture(scope="module")
def fixed_batch(cfg):
    np.random.seed(0)
    torch.manual_seed(0)
    return next(iter(instantiate(cfg.dataloader.train)))


def test_roi_sampling_keeps_foreground_only_and_respects_the_cap(cfg):
    heads = instantiate(cfg.model.detector.roi_heads)
    assert isinstance(heads, ContrastiveROIHeads)
    gt = Instances((200, 200))
    gt.gt_boxes = Boxes(torch.tensor([[10.0, 10, 60, 60], [100, 100, 180, 190]]))
    gt.gt_ids = torch.tensor([7, 8])
    props = Instances((200, 200))
    props.proposal_boxes = Boxes(
        torch.tensor(
            [
                [12.0, 12, 62, 62],  # IoU 0.85 with box 7
                [10, 10, 40, 40],  # IoU 0.36: dropped
                [100, 100, 180, 160],  # IoU 0.67 with box 8
                [0, 150, 30, 199],  # background: dropped
            ]
        )
    )
    props.objectness_logits = torch.zeros(4)
    heads.batch_size_per_image = 100
    (out,) = heads.label_and_sample_proposals([props], [gt])
    # Foreground proposals plus the two pseudo-GT boxes themselves; nothing else.
    got = sorted(zip(out.gt_ids.tolist(), out.proposal_boxes.tensor.tolist()))
    assert got == sorted(
        [
            (7, [12.0, 12, 62, 62]),
            (8, [100.0, 100, 180, 160]),
            (7, [10.0, 10, 60, 60]),
            (8, [100.0, 100, 180, 190]),
        ]
    )
    torch.testing.assert_close(out.gt_boxes.tensor[out.gt_ids == 7][0], gt.gt_boxes.tensor[0])
    # The cap, with every pseudo-GT box kept first.
    heads.batch_size_per_image, heads.always_keep_gt = 3, True
    for _ in range(5):
        (out,) = heads.label_and_sample_proposals([props], [gt])
        assert len(out) == 3
        assert {tuple(b) for b in out.proposal_boxes.tensor.tolist()} >= {
            (10.0, 10.0, 60.0, 60.0),
            (100.0, 100.0, 180.0, 190.0),
        }


def test_momentum_hook_moves_the_copy_and_the_backbone_stays_frozen(
    cfg, fixed_batch, tmp_path, caplog
):
    """Inside the real trainer: the copy equals the online detector before step 0, each step's hook
    moves it by (1 - m) towards the online one (m = 0.5 here, so half-way), and the backbone of
    both branches never changes."""
    cfg.train.output_dir = str(tmp_path)
    cfg.model.base_momentum = 0.5  # m = 0.5 at iteration 0 (the cosine schedule's start)
    trainer, _, start = build_trainer(Args(), cfg)
    pair = trainer.model
    assert isinstance(pair, MomentumPair) and start == 0
    backbone = pair.online.backbone.bottom_up
    frozen = {k: v.clone() for k, v in backbone.state_dict().items()}
    assert all(not p.requires_grad for p in backbone.parameters())
    # Make the two branches differ, then check the hook makes them identical before step 0.
    with torch.no_grad():
        next(pair.momentum.roi_heads.parameters()).add_(1.0)
    trainer._data_loader_iter_obj = iter([fixed_batch] * 10)
    trainer.max_iter, trainer.start_iter, trainer.iter = 3, 0, 0
    named = [(n, p) for n, p in pair.online.named_parameters() if p.requires_grad]
    momentum = dict(pair.momentum.named_parameters())
    with EventStorage(0) as trainer.storage, caplog.at_level(logging.INFO):
        trainer.before_train()
        for a, b in zip(pair.online.state_dict().values(), pair.momentum.state_dict().values()):
            assert torch.equal(a, b)
        # The share of the step-0 weights left at the end: 0.5 * 0.625 * 0.875 over 3 iterations.
        assert "at the end 27.3 % of the momentum detector's trainable weights" in caplog.text
        assert "lower model.base_momentum for a run this short" in caplog.text
        for trainer.iter in range(3):
            k_before = {n: momentum[n].detach().clone() for n, _ in named}
            trainer.before_step()
            trainer.run_step()
            for p in backbone.parameters():
                assert p.grad is None
            trainer.after_step()
            m = cosine_momentum(trainer.iter, 3, base=0.5)
            assert trainer.storage.latest()["momentum"][0] == pytest.approx(m)
            if trainer.iter == 0:
                assert m == 0.5
            moved = 0
            for n, q in named:
                expected = m * k_before[n] + (1 - m) * q.detach()
                torch.testing.assert_close(momentum[n], expected, rtol=1e-5, atol=1e-7)
                moved += not torch.equal(momentum[n], k_before[n])
            assert moved > len(named) // 2  # most trained weights did change
    for branch in (pair.online, pair.momentum):
        for k, v in branch.backbone.bottom_up.state_dict().items():
            assert torch.equal(v, frozen[k]), k


def test_five_steps_on_a_fixed_batch_lower_the_loss_and_align_the_boxes(cfg, fixed_batch):
    torch.manual_seed(0)
    pair = instantiate(cfg.model).train()
    pair.copy_online_to_momentum()
    cfg.optimizer.params.model = pair
    opt = instantiate(cfg.optimizer)
    logged = []
    with EventStorage() as storage:
        for _ in range(8):
            losses = pair(fixed_batch)
            assert set(losses) == {"loss_rpn_cls", "loss_rpn_loc", "loss_box_reg", "loss_con"}
            loss = sum(losses.values())
            assert torch.isfinite(loss)
            latest = storage.latest()
            logged.append({k: latest[k][0] for k in ("con_acc", "con_fixed/loss", "con/chance")})
            logged[-1]["loss_con"] = losses["loss_con"].item()
            opt.zero_grad()
            loss.backward()
            opt.step()
            pair.update_momentum(0.996)
    first, last = logged[0], logged[-1]
    assert last["loss_con"] < first["loss_con"] < first["con/chance"]
    assert last["con_fixed/loss"] < first["con_fixed/loss"]
    # Aligned ids: 0.84 after 8 steps here; with view 2's ids shuffled the loss falls too (the
    # batch is memorised) but the accuracy stays at 0.32.
    assert last["con_acc"] >= 0.5, logged


def test_an_image_whose_boxes_were_all_dropped_trains_with_the_others(cfg, fixed_batch):
    # The mapper drops a box from both views when it is degenerate in one; all of an image's may go.
    batch = [dict(d, views=[dict(v) for v in d["views"]]) for d in fixed_batch]
    for v in batch[1]["views"]:
        v["instances"] = v["instances"][:0]
    pair = instantiate(cfg.model).train()
    with EventStorage() as storage:
        losses = pair(batch)
    assert all(torch.isfinite(v) for v in losses.values()), losses
    n_first = len(batch[0]["views"][0]["instances"])
    # The first image still trains: each of its pseudo-GT boxes is a ROI, so a query.
    assert storage.latest()["con/num_queries"][0] >= n_first > 0


def test_non_finite_loss_names_iteration_and_term(cfg, fixed_batch):
    pair = instantiate(cfg.model).train()
    with torch.no_grad():
        pair.online.roi_heads.box_predictor.bbox_pred.bias.fill_(float("nan"))
    with EventStorage(start_iter=42):
        with pytest.raises(FloatingPointError, match="at iteration 42: loss_box_reg = nan"):
            pair(fixed_batch)


def test_pretraining_model_refuses_inference(cfg, fixed_batch):
    pair = instantiate(cfg.model).eval()
    with pytest.raises(RuntimeError, match="export it with tools/export.py"):
        pair(fixed_batch)


def test_labelled_dataset_for_pretraining_warns(cfg, caplog):
    with caplog.at_level(logging.WARNING):
        instantiate(cfg.dataloader.train.dataset)
    assert "labels are ignored and its boxes are used as proposals" in caplog.text


def test_overlapping_proposals_leave_the_negatives_on_real_proposals(cfg, fixed_batch):
    torch.manual_seed(0)
    pair = instantiate(cfg.model).train()
    pair.copy_online_to_momentum()
    logged = {}
    # The batch's first image has proposals at IoU 0.35 to each other (its file is de-duplicated).
    for iou in (None, 0.3):
        pair.negative_overlap_iou = iou
        torch.manual_seed(1)  # the same ROI sampling in both passes
        with EventStorage() as storage:
            losses = pair(fixed_batch)
        logged[iou] = {k: v[0] for k, v in storage.latest().items()}
        logged[iou]["loss_con"] = losses["loss_con"].item()
    assert logged[0.3]["con/overlapping_ids"] > 0
    assert logged[0.3]["con/num_negatives"] < logged[None]["con/num_negatives"]
    assert logged[0.3]["con/num_queries"] == logged[None]["con/num_queries"]
    assert logged[0.3]["loss_con"] != pytest.approx(logged[None]["loss_con"])
    with pytest.raises(ValueError, match="negative_overlap_iou=1.5"):
        MomentumPair(detector=pair.online, negative_overlap_iou=1.5)


def test_the_pair_reads_its_losses_and_metrics_from_the_device_once(cfg, fixed_batch):
    """Outside the detectors' forwards and the contrastive losses, a pre-training forward waits
    for the device once (one stacked read of the losses and the logged values), and what it logs
    is what the tensors hold."""
    import aligndet_d2.modeling.momentum as momentum_module
    from aligndet_d2.utils.op_count import OpCounter

    torch.manual_seed(0)
    pair = instantiate(cfg.model).train()
    pair.copy_online_to_momentum()
    counter = OpCounter(base_phase="pair")
    seen = {}
    original = momentum_module.box_contrastive_loss

    def contrastive(*a, **k):
        with counter.phase("contrastive"):
            loss, metrics = original(*a, **k)
        seen.setdefault("loss" if "fixed" in seen else "fixed", (loss, metrics))
        return loss, metrics

    for branch in (pair.online, pair.momentum):
        fn = branch.forward_pretrain
        branch.forward_pretrain = lambda *a, fn=fn, **k: _in(counter, "detector", fn, *a, **k)
    momentum_module.box_contrastive_loss = contrastive
    try:
        with EventStorage() as storage, counter:
            pair(fixed_batch)
    finally:
        momentum_module.box_contrastive_loss = original
    # What is left: make_ids_unique's check and offset per image (2 images: torch.equal and
    # int(max) each) and the fixed-set probe's boolean selections (4). The losses' finiteness and
    # the 9 logged values are one .tolist(), which on a CPU tensor does not reach the dispatcher
    # (on a GPU it is one copy to the host); each was an .item() before.
    assert dict(counter.syncs["pair"]) == {"_local_scalar_dense": 2, "equal": 2, "index": 4}
    latest = storage.latest()
    loss, metrics = seen["fixed"]  # the first call is the training loss's
    assert latest["con_acc"][0] == metrics["accuracy"].item()
    assert latest["con/chance"][0] == metrics["chance"].item()
    fixed_loss, _ = seen["loss"]
    assert latest["con_fixed/loss"][0] == fixed_loss.item()


def _in(counter, name, fn, *a, **k):
    with counter.phase(name):
        return fn(*a, **k)
