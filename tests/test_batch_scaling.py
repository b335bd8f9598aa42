"""train.auto_scale: the lr scales with the total batch, the schedule inversely, printed at start."""

import pytest
from conftest import CONFIGS, Args
from detectron2.config import LazyConfig, instantiate

from aligndet_d2.engine import train_loop
from aligndet_d2.engine.scaling import BatchScalingError, scale_to_batch

PAPER = [
    f"{kind}_{det}.py"
    for kind in ("pretrain_box", "finetune")
    for det in ("faster_rcnn", "retinanet", "fcos")
]


@pytest.mark.parametrize("name", PAPER)
def test_eight_gpus_to_one_gives_an_eighth_of_the_lr_and_eight_times_the_iterations(name):
    cfg = LazyConfig.load(str(CONFIGS / name))
    assert cfg.train.reference_batch_size == cfg.dataloader.train.total_batch_size == 16
    before = LazyConfig.load(str(CONFIGS / name))
    cfg = LazyConfig.apply_overrides(
        cfg, ["dataloader.train.total_batch_size=2", "train.auto_scale=True"]
    )
    msg = scale_to_batch(cfg)
    assert "x0.125" in msg and "train.max_iter" in msg
    assert cfg.optimizer.lr == pytest.approx(before.optimizer.lr / 8)
    assert cfg.train.max_iter == 8 * before.train.max_iter
    assert cfg.train.checkpointer.period == 8 * before.train.checkpointer.period
    assert cfg.train.eval_period == 8 * before.train.eval_period
    # The warmup and the lr steps happen after 8x the iterations: the multiplier at iteration 8k of
    # the scaled run is the one at iteration k of the reference run.
    old, new = instantiate(before.lr_multiplier), instantiate(cfg.lr_multiplier)
    n = before.train.max_iter
    for k in (0, 10, 100, 400, n // 2, int(n * 0.7), int(n * 0.9), n - 1):
        assert new(8 * k / cfg.train.max_iter) == pytest.approx(old(k / n)), k
    assert old(0.0) < old(0.5) and old(0.99) < old(0.5)  # a warmup and a step to compare


def test_every_config_is_set_for_its_own_batch():
    """No shipped config warns: its reference batch is the batch it trains with."""
    for path in sorted(CONFIGS.glob("*.py")):
        cfg = LazyConfig.load(str(path))
        assert cfg.train.reference_batch_size == cfg.dataloader.train.total_batch_size, path.name
        assert cfg.train.auto_scale is False and scale_to_batch(cfg) is None, path.name


def test_without_auto_scale_nothing_changes_and_the_log_says_why():
    cfg = LazyConfig.load(str(CONFIGS / "finetune_faster_rcnn.py"))
    cfg.dataloader.train.total_batch_size = 4
    lr, iters = cfg.optimizer.lr, cfg.train.max_iter
    msg = scale_to_batch(cfg)
    assert "train.auto_scale=True rescales" in msg
    assert (cfg.optimizer.lr, cfg.train.max_iter) == (lr, iters)


def test_auto_scale_without_a_reference_batch_is_an_error():
    cfg = LazyConfig.load(str(CONFIGS / "finetune_faster_rcnn.py"))
    cfg.train.auto_scale = True
    del cfg.train["reference_batch_size"]
    with pytest.raises(BatchScalingError, match="train.reference_batch_size"):
        scale_to_batch(cfg)


def test_train_net_scales_before_saving_the_config(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(train_loop, "do_train", lambda args, cfg: seen.append(cfg))
    args = Args()
    args.config_file = str(CONFIGS / "finetune_faster_rcnn_cpu.py")
    args.opts = [
        "dataloader.train.total_batch_size=4",
        "train.auto_scale=True",
        f"train.output_dir={tmp_path}",
    ]
    train_loop.main(args)
    (cfg,) = seen
    assert cfg.train.max_iter == 192 and cfg.train.checkpointer.period == 192  # 384 at batch 2
    saved = LazyConfig.load(str(tmp_path / "config.yaml"))
    assert saved.train.max_iter == 192 and saved.optimizer.lr == pytest.approx(cfg.optimizer.lr)
    assert "train.auto_scale: total batch 4 against 2" in (tmp_path / "log.txt").read_text()
