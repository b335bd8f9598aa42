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
