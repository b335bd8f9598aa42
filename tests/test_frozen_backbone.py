"""Frozen-backbone fine-tuning (Proper Reuse): residual adapters, the frozen configs and the wide
neck and heads."""

import numpy as np
import pytest
import torch
from conftest import CONFIGS
from detectron2.config import LazyConfig, instantiate
from detectron2.modeling.backbone.resnet import BasicStem, ResNet

from aligndet_d2.checkpoint.export import (
    ExportMismatchError,
    check_report,
    export_state_dict,
    key_report,
)
from aligndet_d2.modeling import (
    EfficientNetLite,
    FrozenResNet,
    adapter_parameters,
    check_adapter_switches,
)
from aligndet_d2.modeling.backbones.adapters import is_adapter_key

# Lite0's blocks (input, output channels), from its architecture table: a parallel adapter is an
# input x output 1x1 conv beside each block, a series one output x output.
LITE0_BLOCKS = [
    (32, 16),
    (16, 24),
    (24, 24),
    (24, 40),
    (40, 40),
    (40, 80),
    (80, 80),
    (80, 80),
    (80, 112),
] + [(112, 112), (112, 112), (112, 192), (192, 192), (192, 192), (192, 192), (192, 320)]
# R-50's bottleneck widths: a 3x3 conv of width w per block, (blocks, w) per stage.
R50_3X3 = ((3, 64), (4, 128), (6, 256), (3, 512))


def _resnet(adapters=None):
    torch.manual_seed(0)
    return FrozenResNet(
        BasicStem(norm="FrozenBN"),
        ResNet.make_default_stages(50, norm="FrozenBN"),
        out_features=["res2", "res3", "res4", "res5"],
        adapters=adapters,
    )


def _lite(adapters=None):
    torch.manual_seed(0)
    return EfficientNetLite(
        out_features=["res2", "res3", "res4", "res5"], pretrained=False, adapters=adapters
    )


def _backbones(mode):
    return [(_resnet(), _resnet(mode)), (_lite(), _lite(mode))]


@pytest.mark.parametrize("mode", ["parallel", "series"])
def test_adapters_start_as_the_frozen_backbone(mode):
    x = torch.randn(2, 3, 64, 96)
    for plain, adapted in _backbones(mode):
        missing, unexpected = plain.load_state_dict(adapted.state_dict(), strict=False)
        assert not missing and unexpected and all(is_adapter_key(k) for k in unexpected)
        # A backbone checkpoint without adapters loads into the adapted one: only adapters miss.
        missing, unexpected = adapted.load_state_dict(plain.state_dict(), strict=False)
        assert not unexpected and missing == sorted(missing, key=missing.index)
        assert set(missing) == {k for k in adapted.state_dict() if is_adapter_key(k)}
        with torch.no_grad():
            a, b = adapted(x), plain(x)
        for k in a:
            assert torch.equal(a[k], b[k]), k
        # With autograd on, CPU kernels may sum in another order: equal to float32 noise.
        a = adapted(x)
        for k in a:
            assert torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-4), k


def test_adapter_parameter_counts():
    assert adapter_parameters(_resnet("parallel")) == sum(n * w * w for n, w in R50_3X3)
    assert adapter_parameters(_resnet("series")) == sum(n * w * w for n, w in R50_3X3)
    assert adapter_parameters(_lite("parallel")) == sum(i * o for i, o in LITE0_BLOCKS)
    assert adapter_parameters(_lite("series")) == sum(o * o for _, o in LITE0_BLOCKS)
    assert adapter_parameters(_resnet()) == adapter_parameters(_lite()) == 0


@pytest.mark.parametrize("mode", ["parallel", "series"])
def test_only_adapters_train_and_they_change_the_features(mode):
    x = torch.randn(2, 3, 64, 96)
    for _, adapted in _backbones(mode):
        trainable = {n for n, p in adapted.named_parameters() if p.requires_grad}
        assert trainable and all(is_adapter_key(n) for n in trainable)
        with torch.no_grad():
            before = adapted(x)
        opt = torch.optim.SGD([p for p in adapted.parameters() if p.requires_grad], lr=0.1)
        sum(f.square().mean() for f in adapted(x).values()).backward()
        grads = {n: p.grad for n, p in adapted.named_parameters() if p.grad is not None}
        assert set(grads) == trainable
        # Every adapter takes a gradient, the first (earliest in the network) too.
        assert all(g.abs().sum() > 0 for g in grads.values())
        opt.step()
        with torch.no_grad():
            after = adapted(x)
        assert all(not torch.equal(before[k], after[k]) for k in before)


def test_frozen_backbone_without_adapters_keeps_no_graph():
    x = torch.randn(1, 3, 64, 64)
    for backbone in (_resnet(), _lite()):
        assert not any(f.requires_grad for f in backbone(x).values())


def test_unknown_adapter_mode_is_an_error():
    with pytest.raises(ValueError, match=r"FrozenResNet: adapters='serial' \(allowed: None, par"):
        _resnet("serial")
    with pytest.raises(ValueError, match="EfficientNetLite: adapters='yes'"):
        _lite("yes")


def test_adapter_switch_on_a_backbone_without_adapters_is_a_clear_error():
    cfg = LazyConfig.load(str(CONFIGS / "finetune_faster_rcnn.py"))  # Detectron2's ResNet
    cfg.model.backbone.bottom_up.adapters = "parallel"
    with pytest.raises(ValueError) as e:
        check_adapter_switches(cfg.model, pretraining=False)
    msg = str(e.value)
    assert "model.backbone.bottom_up.adapters='parallel'" in msg
    assert "backbone detectron2.modeling.ResNet has no residual adapters" in msg
    assert "FrozenResNet" in msg and "EfficientNetLite" in msg
    # The frozen config's backbone has them.
    frozen = LazyConfig.load(str(CONFIGS / "finetune_faster_rcnn_frozen.py"))
    frozen.model.backbone.bottom_up.adapters = "parallel"
    check_adapter_switches(frozen.model, pretraining=False)


def test_adapters_in_pretraining_are_refused(tmp_path):
    from conftest import Args, small_pretrain_cfg

    from aligndet_d2.engine.train_loop import build_trainer

    cfg = small_pretrain_cfg(
        tmp_path, extra=["model.detector.backbone.bottom_up.adapters=parallel"]
    )
    with pytest.raises(ValueError, match="adapters are for fine-tuning"):
        build_trainer(Args(), cfg)


@pytest.mark.parametrize(
    "name",
    [
        f"finetune_{d}_frozen{v}.py"
        for d in ("faster_rcnn", "retinanet", "fcos")
        for v in ("", "_cpu", "_voc_cpu")
    ],
)
def test_frozen_configs_train_no_backbone_weight(name):
    cfg = LazyConfig.load(str(CONFIGS / name))
    sibling = LazyConfig.load(str(CONFIGS / name.replace("_frozen", "")))
    assert cfg.train.max_iter == sibling.train.max_iter and cfg.optimizer.lr == sibling.optimizer.lr
    model = instantiate(cfg.model)
    bottom_up = model.backbone.bottom_up
    assert not any(p.requires_grad for p in bottom_up.parameters())
    assert any(p.requires_grad for p in model.backbone.parameters())  # the FPN trains
    cfg.model.backbone.bottom_up.adapters = "parallel"
    bottom_up = instantiate(cfg.model.backbone.bottom_up)
    trainable = [n for n, p in bottom_up.named_parameters() if p.requires_grad]
    assert trainable and all(is_adapter_key(n) for n in trainable)


def test_export_report_counts_adapters_as_fresh(tmp_path):
    cfg = LazyConfig.load(str(CONFIGS / "finetune_faster_rcnn_frozen_cpu.py"))
    plain = instantiate(cfg.model).state_dict()  # what an export of the pre-training holds
    cfg.model.backbone.bottom_up.adapters = "parallel"
    adapted = instantiate(cfg.model).state_dict()
    report = key_report(plain, adapted)
    check_report(report)  # adapter keys missing from the export are no mismatch
    assert report["adapters"]["random_init"] and not report["backbone"]["random_init"]
    assert list(report)[:2] == ["backbone", "adapters"]


def test_wide_pretraining_exports_into_the_wide_fine_tune_config():
    pre = instantiate(LazyConfig.load(str(CONFIGS / "pretrain_box_faster_rcnn_wide_cpu.py")).model)
    exported, dropped = export_state_dict(pre.state_dict())
    wide = instantiate(
        LazyConfig.load(str(CONFIGS / "finetune_faster_rcnn_frozen_wide_voc_cpu.py")).model
    )
    report = key_report(exported, wide.state_dict(), dropped)
    check_report(report)
    for module in ("FPN", "RPN", "box head"):
        assert report[module]["transferred"] and not report[module]["random_init"], module
    assert wide.backbone.output_shape()["p3"].channels == 256
    assert len(wide.proposal_generator.rpn_head.conv) == 2
    assert [c.out_channels for c in wide.roi_heads.box_head.conv_norm_relus] == [128] * 4
    # The plain neck and heads cannot take it.
    plain = instantiate(
        LazyConfig.load(str(CONFIGS / "finetune_faster_rcnn_frozen_voc_cpu.py")).model
    )
    with pytest.raises(ExportMismatchError, match="FPN"):
        check_report(key_report(exported, plain.state_dict(), dropped))


def test_large_scale_jitter_config_gives_square_crops():
    from conftest import COCO64
    from detectron2.data.datasets import load_coco_json

    cfg = LazyConfig.load(str(CONFIGS / "finetune_faster_rcnn_frozen_wide_lsj.py"))
    mapper = instantiate(cfg.dataloader.train.mapper)
    dicts = load_coco_json(str(COCO64 / "annotations" / "train.json"), str(COCO64 / "images"))
    np.random.seed(0)
    for d in dicts[:6]:
        out = mapper(d)
        assert tuple(out["image"].shape[1:]) == (1024, 1024)  # scaled, then cropped or padded
        boxes = out["instances"].gt_boxes.tensor
        assert (boxes >= 0).all() and (boxes <= 1024).all()


def test_cascade_heads_train_with_a_frozen_backbone_and_refuse_a_faster_rcnn_export():
    from detectron2.structures import Boxes, Instances
    from detectron2.utils.events import EventStorage

    cfg = LazyConfig.load(str(CONFIGS / "finetune_cascade_rcnn_frozen_voc_cpu.py"))
    cfg.model.backbone.bottom_up.pretrained = False
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    heads = model.roi_heads
    ious = [m.thresholds[1] for m in heads.proposal_matchers]
    assert heads.num_cascade_stages == 3 and ious == [0.5, 0.6, 0.7]
    assert all(p.num_classes == 20 and p.bbox_pred.out_features == 4 for p in heads.box_predictor)
    inst = Instances((192, 256), gt_boxes=Boxes(torch.tensor([[20.0, 30.0, 120.0, 150.0]])))
    inst.gt_classes = torch.tensor([3])
    batch = [{"image": torch.randint(0, 255, (3, 192, 256)).float(), "instances": inst}]
    with EventStorage():
        losses = model(batch)
    assert {f"loss_cls_stage{k}" for k in range(3)} <= set(losses)
    sum(losses.values()).backward()
    assert all(p.grad is None for p in model.backbone.bottom_up.parameters())
    assert all(p.grad is not None for p in heads.box_head[2].parameters())
    # A Faster R-CNN export has one box head: the key check names it instead of loading half.
    plain = instantiate(
        LazyConfig.load(str(CONFIGS / "finetune_faster_rcnn_frozen_voc_cpu.py")).model
    )
    with pytest.raises(ExportMismatchError, match="box head"):
        check_report(key_report(plain.state_dict(), model.state_dict()))
