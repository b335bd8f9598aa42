"""Frozen-backbone fine-tuning (Proper Reuse): residual adapters, the frozen configs and the wide
neck and heads."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import CONFIGS
from detectron2.config import LazyConfig, instantiate
from detectron2.layers import Conv2d, FrozenBatchNorm2d
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
from aligndet_d2.modeling.backbones.adapters import AdaptedConv2d, is_adapter_key

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


def _frozen_bn(channels, gen):
    """A FrozenBatchNorm2d far from the identity, so that adding before or after it differs."""
    norm = FrozenBatchNorm2d(channels)
    norm.weight.copy_(torch.rand(channels, generator=gen) + 0.5)
    norm.bias.copy_(torch.randn(channels, generator=gen))
    norm.running_mean.copy_(torch.randn(channels, generator=gen))
    norm.running_var.copy_(torch.rand(channels, generator=gen) + 0.5)
    return norm


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("mode", ["parallel", "series"])
def test_adapter_is_added_before_the_frozen_norm_and_activation(mode, stride):
    gen = torch.Generator().manual_seed(0)
    norm = _frozen_bn(6, gen)
    conv = Conv2d(4, 6, 3, stride=stride, padding=1, bias=False, norm=norm, activation=F.relu)
    conv.weight.requires_grad_(False)  # as FrozenResNet's stages are before it wraps them
    adapted = AdaptedConv2d.wrap(conv, mode)
    assert adapted.weight is conv.weight and adapted.norm is norm
    a = torch.randn(adapted.adapter.weight.shape, generator=gen)
    with torch.no_grad():
        adapted.adapter.weight.copy_(a)
    x = torch.randn(2, 4, 9, 11, generator=gen)

    y = F.conv2d(x, conv.weight, stride=stride, padding=1)
    if mode == "parallel":  # reads the input, with the conv's stride
        assert a.shape == (6, 4, 1, 1)
        z = y + F.conv2d(x, a, stride=stride)
    else:  # reads the conv's output
        assert a.shape == (6, 6, 1, 1)
        z = y + F.conv2d(y, a)
    # The frozen norm's affine form: (z - mean) / sqrt(var + eps) * weight + bias.
    c = (slice(None), None, None)
    bn = (z - norm.running_mean[c]) / torch.sqrt(norm.running_var[c] + norm.eps) * norm.weight[c]
    expected = F.relu(bn + norm.bias[c])
    out = adapted(x)
    assert out.shape == (2, 6, (9 - 1) // stride + 1, (11 - 1) // stride + 1)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    # Only the adapter trains, and it takes the gradient.
    assert [n for n, p in adapted.named_parameters() if p.requires_grad] == ["adapter.weight"]
    out.sum().backward()
    assert adapted.adapter.weight.grad.abs().sum() > 0 and conv.weight.grad is None


def test_new_adapters_start_at_zero_and_train():
    conv = Conv2d(4, 6, 3, padding=1, bias=False, norm=FrozenBatchNorm2d(6))
    for mode in ("parallel", "series"):
        adapter = AdaptedConv2d.wrap(conv, mode).adapter
        assert adapter.bias is None and adapter.kernel_size == (1, 1)
        assert torch.count_nonzero(adapter.weight) == 0 and adapter.weight.requires_grad


@pytest.mark.parametrize("mode", ["parallel", "series"])
def test_lite_adapter_goes_from_each_block_input_to_its_output(mode):
    """EfficientNet-Lite's adapters sit beside whole MBConv blocks: the next block (and the tap)
    sees ``block(x) + A(x)`` (parallel) or ``block(x) + A(block(x))`` (series)."""
    backbone = _lite(mode)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for a in backbone.adapters:
            a.weight.copy_(0.1 * torch.randn(a.weight.shape, generator=gen))
    seen = []  # (block input, block output) of every block, in order
    hooks = [
        b.register_forward_hook(lambda m, inp, out: seen.append((inp[0], out)))
        for b in backbone.blocks
    ]
    try:
        with torch.no_grad():
            feats = backbone(torch.randn(1, 3, 64, 64, generator=gen))
    finally:
        for h in hooks:
            h.remove()
    assert len(seen) == len(backbone.adapters) == 16
    adapted = []
    for (x, y), a in zip(seen, backbone.adapters):
        adapted.append(y + F.conv2d(x if mode == "parallel" else y, a.weight, stride=a.stride))
    for i in range(len(seen) - 1):  # the next block reads the adapted output
        torch.testing.assert_close(seen[i + 1][0], adapted[i], rtol=1e-5, atol=1e-6)
    # The taps are the adapted outputs of the last block of each stride (blocks 2, 4, 10, 15).
    for name, i in (("res2", 2), ("res3", 4), ("res4", 10), ("res5", 15)):
        torch.testing.assert_close(feats[name], adapted[i], rtol=1e-5, atol=1e-6)
        # The adapter counts (a random-init Lite's features are ~1e-4: compare relatively).
        gap = (feats[name] - seen[i][1]).abs().max() / feats[name].abs().max()
        assert gap > 0.01, name


def test_an_export_without_adapters_loads_into_an_adapted_detector(tmp_path):
    """The real loading path (``train.init_checkpoint`` through Detectron2's checkpointer): every
    exported weight arrives and the adapters stay at zero, so step 0 is the exported detector."""
    from aligndet_d2.engine.train_loop import load_init_checkpoint

    cfg = LazyConfig.load(str(CONFIGS / "finetune_faster_rcnn_frozen_cpu.py"))
    cfg.model.backbone.bottom_up.pretrained = False
    torch.manual_seed(0)
    export = instantiate(cfg.model).state_dict()
    gen = torch.Generator().manual_seed(2)
    # Weights no fresh model has, so that a key left unloaded shows.
    export = {
        k: v + torch.rand(v.shape, generator=gen) if v.is_floating_point() else v
        for k, v in export.items()
    }
    path = tmp_path / "export.pth"
    torch.save({"model": export}, path)
    cfg.model.backbone.bottom_up.adapters = "parallel"
    torch.manual_seed(1)
    model = instantiate(cfg.model)
    load_init_checkpoint(model, str(path))
    state = model.state_dict()
    adapters = [k for k in state if is_adapter_key(k)]
    assert adapters and set(state) - set(adapters) == set(export)
    for k, v in export.items():
        assert torch.equal(state[k], v), k
    assert all(torch.count_nonzero(state[k]) == 0 for k in adapters)


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
        adapters = {n for n, _ in adapted.named_parameters() if is_adapter_key(n)}
        # Every adapter trains, and nothing else (the frozen convs keep their ImageNet values).
        assert trainable and trainable == adapters
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
