"""Cascade R-CNN pre-training: stage-1 sampling with background, ids matched per stage, per-stage
contrastive losses, export into the Cascade fine-tune config."""

import pytest
import torch
from conftest import CONFIGS, Args, pretrain_cfg
from detectron2.config import LazyConfig, instantiate
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from aligndet_d2.checkpoint.export import check_report, export_state_dict, key_report
from aligndet_d2.modeling.contrastive import box_contrastive_loss


def _pair():
    cfg = LazyConfig.load(str(CONFIGS / "pretrain_box_cascade_rcnn_cpu.py"))
    cfg.model.detector.backbone.bottom_up.pretrained = False
    torch.manual_seed(0)
    return instantiate(cfg.model)


def _views():
    g = torch.Generator().manual_seed(0)
    out = []
    for h, w in ((256, 320), (288, 256)):
        views = []
        for v in range(2):
            inst = Instances((h, w))
            boxes = torch.tensor([[10.0, 20.0, 90.0, 120.0], [50, 40, 200, 220], [5, 5, 60, 50]])
            inst.gt_boxes = Boxes(boxes + 4 * v)
            inst.gt_ids = torch.arange(3)
            inst.gt_classes = torch.zeros(3, dtype=torch.int64)
            image = torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)
            views.append({"image": image, "instances": inst})
        out.append({"file_name": f"im{h}.jpg", "views": views})
    return out


def test_stages_sample_background_and_share_ids():
    pair = _pair()
    with EventStorage():
        _, s = pair.online.forward_pretrain([d["views"][0] for d in _views()], True)
    assert set(s.stage.tolist()) == {0, 1, 2}
    first = s.stage == 0
    # Stage 1: at most 128 ROIs per image, at most 25 % foreground, the rest background.
    assert first.sum() <= 2 * 128
    fg = (s.ids[first] >= 0).sum().item()
    assert 0 < fg <= 0.25 * 2 * 128 and (s.ids[first] < 0).any()
    # Later stages refine stage 1's ROIs (same count) and label them with the same ids.
    for k in (1, 2):
        assert (s.stage == k).sum() == first.sum()
        assert set(s.ids[(s.stage == k) & (s.ids >= 0)].tolist()) <= {0, 1, 2, 3, 4, 5}
    # The fixed set: the pseudo-GT boxes, stage 1 only.
    assert s.fixed.any() and not s.fixed[~first].any()


def test_contrastive_loss_is_per_stage_and_weighted():
    pair = _pair()
    views = _views()
    with EventStorage() as storage:
        losses = pair(views)
        logged = storage.latest()
    assert {f"loss_box_reg_stage{k}" for k in range(3)} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    assert {f"con/stage{k}" for k in range(3)} <= set(logged)
    per_stage = [logged[f"con/stage{k}"][0] for k in range(3)]
    expected = 1.0 * per_stage[0] + 0.5 * per_stage[1] + 0.25 * per_stage[2]
    assert losses["loss_con"].item() == pytest.approx(expected, rel=1e-5)
    # Each stage's loss pairs its own samples only: recompute stage 2 by hand.
    with EventStorage(), torch.no_grad():
        q_views = [dict(d["views"][0]) for d in views]
        k_views = [dict(d["views"][1]) for d in views]
        from aligndet_d2.modeling.momentum import make_ids_unique

        make_ids_unique([q_views, k_views])
        torch.manual_seed(1)
        _, q = pair.online.forward_pretrain(q_views, False)
        _, k = pair.momentum.forward_pretrain(k_views, False)
        loss, _, stages = pair._contrastive(q, k, None)
        m, n = q.stage == 2, k.stage == 2
        alone, _ = box_contrastive_loss(q.emb[m], q.ids[m], k.emb[n], k.ids[n], pair.temperature)
    assert stages[2] == pytest.approx(alone.item(), rel=1e-6)


@pytest.mark.parametrize("keep", [False, True])
def test_export_loads_into_the_cascade_fine_tune_config(keep):
    pair = _pair()
    exported, dropped = export_state_dict(pair.state_dict(), keep_box_regression=keep)
    ft_cfg = LazyConfig.load(str(CONFIGS / "finetune_cascade_rcnn_voc_cpu.py"))
    ft = instantiate(ft_cfg.model)
    report = key_report(exported, ft.state_dict(), dropped)
    check_report(report)
    head = report["box head"]
    assert {k.split(".")[2] for k in head["transferred"]} == {"0", "1", "2"}
    assert not head["random_init"]
    regs = [k for k in exported if ".bbox_pred." in k and k.startswith("roi_heads.")]
    assert len(regs) == (6 if keep else 0)  # weight and bias of three stages


@pytest.mark.timeout(600)
def test_cascade_pretraining_runs(tmp_path):
    from aligndet_d2.engine.train_loop import build_trainer

    cfg = pretrain_cfg(
        "cascade_rcnn",
        extra=[
            f"train.output_dir={tmp_path}",
            "train.max_iter=3",
            "train.device=cpu",
            "dataloader.train.mapper.max_proposals=16",
        ],
    )
    trainer, _, start = build_trainer(Args(), cfg)
    trainer.train(start, 3)
    assert (tmp_path / "model_final.pth").exists()


def test_one_stage_weight_per_stage_is_required():
    cfg = LazyConfig.load(str(CONFIGS / "pretrain_box_cascade_rcnn_cpu.py"))
    cfg.model.detector.backbone.bottom_up.pretrained = False
    cfg.model.detector.roi_heads.stage_loss_weights = (1.0, 0.5)
    with pytest.raises(ValueError, match=r"stage_loss_weights=\(1.0, 0.5\): one weight per stage"):
        instantiate(cfg.model)


def _box(x1, y1, x2, y2):
    return [float(x1), float(y1), float(x2), float(y2)]


def test_each_stage_matches_its_rois_at_its_own_iou():
    from aligndet_d2.modeling.contrastive import BACKGROUND_ID

    heads = _pair().online.roi_heads
    target = Instances((200, 200))
    target.gt_boxes = Boxes(torch.tensor([_box(0, 0, 100, 100)]))
    target.gt_ids = torch.tensor([7])
    # [0, 0, w, 100] inside the target box has IoU w / 100 with it.
    widths = (45, 55, 65, 75)
    for k, iou in enumerate((0.5, 0.6, 0.7)):
        rois = Instances((200, 200))
        rois.proposal_boxes = Boxes(torch.tensor([_box(0, 0, w, 100) for w in widths]))
        rois.is_gt = torch.zeros(len(widths), dtype=torch.bool)
        out = heads._label([rois], [target], k, sample=False)[0]
        expected = [7 if w / 100 >= iou else BACKGROUND_ID for w in widths]
        assert out.gt_ids.tolist() == expected, f"stage {k}"


def _cascade_inputs(h=256, w=320):
    g = torch.Generator().manual_seed(0)
    features = {
        f"p{lvl}": torch.randn(2, 128, h // 2**lvl, w // 2**lvl, generator=g) for lvl in (3, 4, 5)
    }
    targets, proposals = [], []
    for i in range(2):
        t = Instances((h, w))
        t.gt_boxes = Boxes(torch.tensor([_box(10, 20, 90, 120), _box(50, 40, 200, 220)]) + 7 * i)
        t.gt_ids = torch.arange(2) + 2 * i
        targets.append(t)
        xy = torch.rand(40, 2, generator=g) * torch.tensor([w - 60.0, h - 60.0])
        wh = 20 + torch.rand(40, 2, generator=g) * 100
        jitter = t.gt_boxes.tensor.repeat(5, 1) + torch.randn(10, 4, generator=g) * 6
        p = Instances((h, w))
        p.proposal_boxes = Boxes(torch.cat([jitter, torch.cat([xy, xy + wh], 1)]).clamp(min=0))
        p.objectness_logits = torch.zeros(len(p.proposal_boxes))
        proposals.append(p)
    return features, proposals, targets


def test_stages_refine_the_previous_boxes_and_weigh_box_losses_over_all_their_rois():
    """Stage k + 1 pools stage k's regressed boxes (its own Box2BoxTransform weights, clipped);
    each stage's box loss is smooth L1 (beta 1) over its foreground ROIs divided by all its ROIs
    (Detectron2's CascadeROIHeads, the reference HTC), times the stage weight."""
    import torch.nn.functional as F
    from detectron2.structures import pairwise_iou

    heads = _pair().online.roi_heads
    deltas = [
        torch.tensor([0.3, -0.2, 0.1, 0.05]),
        torch.tensor([-0.4, 0.3, -0.1, 0.1]),
        torch.tensor([0.5, 0.2, 0.05, -0.1]),
    ]
    for p, d in zip(heads.box_predictor, deltas):
        torch.nn.init.zeros_(p.bbox_pred.weight)
        p.bbox_pred.bias.data.copy_(d)
    pooled = []
    pool = heads.box_pooler.forward
    heads.box_pooler.forward = lambda x, boxes: (
        pooled.append([b.tensor.clone() for b in boxes]) or pool(x, boxes)
    )
    features, proposals, targets = _cascade_inputs()
    torch.manual_seed(0)
    with EventStorage():
        losses, samples = heads.forward_pretrain(features, proposals, targets)
    assert len(pooled) == 3
    for k in (1, 2):
        transform = heads.box_predictor[k - 1].box2box_transform
        for prev, now in zip(pooled[k - 1], pooled[k]):
            expected = Boxes(transform.apply_deltas(deltas[k - 1].expand(len(prev), 4), prev))
            expected.clip((256, 320))
            assert torch.allclose(now, expected.tensor[expected.nonempty()], atol=1e-4)
    for k, (iou_min, weight) in enumerate(zip((0.5, 0.6, 0.7), (1.0, 0.5, 0.25))):
        transform = heads.box_predictor[k].box2box_transform
        total, rois, fg_rois = 0.0, 0, 0
        for boxes, t in zip(pooled[k], targets):
            best, idx = pairwise_iou(t.gt_boxes, Boxes(boxes)).max(dim=0)
            fg = best >= iou_min
            goal = transform.get_deltas(boxes[fg], t.gt_boxes.tensor[idx[fg]])
            pred = deltas[k].expand_as(goal)
            total += F.smooth_l1_loss(pred, goal, beta=1.0, reduction="sum").item()
            rois, fg_rois = rois + len(boxes), fg_rois + int(fg.sum())
        assert 0 < fg_rois < rois, f"stage {k}: the test needs both foreground and background"
        assert (samples.ids[samples.stage == k] >= 0).sum() == fg_rois
        got = losses[f"loss_box_reg_stage{k}"].item()
        assert got == pytest.approx(weight * total / rois, rel=1e-4), f"stage {k}"


def test_refined_boxes_are_detached_clipped_and_the_empty_ones_dropped():
    from aligndet_d2.modeling.cascade import ContrastiveCascadeROIHeads

    rois = Instances((100, 100))
    rois.proposal_boxes = Boxes(torch.zeros(4, 4))
    rois.is_gt = torch.tensor([False, True, False, True])
    boxes = torch.tensor(
        [
            _box(10, 10, 50, 50),
            _box(-5, 20, 40, 130),
            _box(120, 10, 150, 40),
            _box(20, -30, 60, -5),
        ],
        requires_grad=True,
    )
    out = ContrastiveCascadeROIHeads.refined_rois([rois], [boxes])[0]
    # The third box lies right of the image and the fourth above it: empty once clipped.
    assert out.proposal_boxes.tensor.tolist() == [_box(10, 10, 50, 50), _box(0, 20, 40, 100)]
    assert out.is_gt.tolist() == [False, True]
    assert not out.proposal_boxes.tensor.requires_grad
