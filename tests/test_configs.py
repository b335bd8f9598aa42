"""Every config under configs/ loads and builds its model, optimizer and schedule."""

import pytest
from conftest import CONFIGS
from detectron2.config import LazyConfig, instantiate

from aligndet_d2.modeling import MomentumPair
from aligndet_d2.modeling.momentum import initial_weight_share

ALL = sorted(p.name for p in CONFIGS.glob("*.py"))
# DETR trains without warmup (its paper and the reference).
NO_WARMUP = {"finetune_detr.py", "pretrain_box_detr.py"}


def test_configs_exist():
    assert {
        "pretrain_box_faster_rcnn.py",
        "pretrain_box_faster_rcnn_cpu.py",
        "finetune_faster_rcnn.py",
        "finetune_faster_rcnn_cpu.py",
        "finetune_mask_rcnn.py",
        "finetune_mask_rcnn_cpu.py",
    } <= set(ALL)


@pytest.mark.parametrize("name", ALL)
def test_config_instantiates(name):
    cfg = LazyConfig.load(str(CONFIGS / name))
    model = instantiate(cfg.model)
    assert isinstance(model, MomentumPair) == name.startswith("pretrain_")
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    assert optimizer.param_groups and cfg.train.max_iter > 0
    lr = instantiate(cfg.lr_multiplier)
    # A warmup (DETR's schedule has none), then steps down.
    assert (lr(0.0) < lr(0.5) or name in NO_WARMUP) and lr(0.5) <= 1.0
    assert lr(0.99) < lr(0.5)
    if name.startswith("pretrain_"):
        # Only the neck and the heads train.
        net = getattr(model.online.backbone, "bottom_up", model.online.backbone)  # DETR: no FPN
        assert not any(p.requires_grad for p in net.parameters())
        assert cfg.train.eval_period == 0
        # The momentum schedule fits the run: by its end the momentum detector holds little of
        # its random initialisation (0.996 over a 192-iteration CPU run would leave 68 %).
        assert initial_weight_share(cfg.train.max_iter, model.base_momentum) < 0.1


def test_paper_settings():
    pre = LazyConfig.load(str(CONFIGS / "pretrain_box_faster_rcnn.py"))
    assert pre.optimizer.lr == 0.02 and pre.optimizer.weight_decay == 1e-4
    assert pre.dataloader.train.total_batch_size == 16 and pre.train.max_iter == 88716
    det = pre.model.detector
    assert det.proposal_generator.batch_size_per_image == 4096
    assert det.proposal_generator.positive_fraction == 1.0
    assert det.roi_heads.batch_size_per_image == 4096
    assert det.roi_heads.box_head.conv_dims == [256] * 4 and det.roi_heads.box_head.fc_dims == [
        1024
    ]
    assert pre.model.temperature == 0.5 and pre.model.base_momentum == 0.996
    ft = LazyConfig.load(str(CONFIGS / "finetune_faster_rcnn.py"))
    assert ft.optimizer.lr == pytest.approx(0.03) and ft.optimizer.weight_decay == pytest.approx(
        5e-5
    )
    assert ft.model.roi_heads.box_head.conv_dims == [256] * 4


def test_unknown_config_key_is_detectron2s_error(tmp_path):
    from conftest import Args, small_pretrain_cfg

    from aligndet_d2.engine.train_loop import build_trainer

    cfg = small_pretrain_cfg(tmp_path, extra=["model.detector.roi_heads.batch_size_per_imag=8"])
    with pytest.raises(TypeError, match="batch_size_per_imag"):
        build_trainer(Args(), cfg)
