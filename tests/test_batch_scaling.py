"""train.auto_scale: the lr scales with the total batch, the schedule inversely, the EMA momentum
of pre-training as a power of the batch ratio, printed at start."""

import pytest
from conftest import CONFIGS, Args
from detectron2.config import LazyConfig, instantiate

from aligndet_d2.engine import train_loop
from aligndet_d2.engine.hooks import MomentumUpdateHook
from aligndet_d2.engine.scaling import BatchScalingError, scale_to_batch
from aligndet_d2.modeling.momentum import cosine_momentum, initial_weight_share

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


def _train_net_at_batch_4(config, tmp_path, monkeypatch):
    """The config train_net.py would train, auto-scaled to 4 images per batch (no training)."""
    seen = []
    monkeypatch.setattr(train_loop, "do_train", lambda args, cfg: seen.append(cfg))
    args = Args()
    args.config_file = str(CONFIGS / config)
    args.opts = [
        "dataloader.train.total_batch_size=4",
        "train.auto_scale=True",
        f"train.output_dir={tmp_path}",
    ]
    train_loop.main(args)
    (cfg,) = seen
    return cfg


def test_train_net_scales_before_saving_the_config(tmp_path, monkeypatch):
    cfg = _train_net_at_batch_4("finetune_faster_rcnn_cpu.py", tmp_path, monkeypatch)
    assert cfg.train.max_iter == 192 and cfg.train.checkpointer.period == 192  # 384 at batch 2
    saved = LazyConfig.load(str(tmp_path / "config.yaml"))
    assert saved.train.max_iter == 192 and saved.optimizer.lr == pytest.approx(cfg.optimizer.lr)
    assert "train.auto_scale: total batch 4 against 2" in (tmp_path / "log.txt").read_text()


def _scaled(name, batch, auto=True):
    cfg = LazyConfig.load(str(CONFIGS / name))
    cfg = LazyConfig.apply_overrides(
        cfg, [f"dataloader.train.total_batch_size={batch}", f"train.auto_scale={auto}"]
    )
    return cfg, scale_to_batch(cfg)


@pytest.mark.parametrize(
    "name, batch, expected",
    [
        # 0.996 ** (2 / 16) = exp(ln(0.996) / 8) = exp(-0.00400802 / 8) = 0.99949912.
        ("pretrain_box_faster_rcnn.py", 2, 0.99949912),
        ("pretrain_box_detr.py", 2, 0.99949912),
        # 0.996 ** (32 / 16) = 0.996 ** 2.
        ("pretrain_box_fcos.py", 32, 0.992016),
        # The CPU configs' reference batch is 2: 0.97 ** (4 / 2).
        ("pretrain_box_faster_rcnn_cpu.py", 4, 0.9409),
    ],
)
def test_auto_scale_raises_the_ema_momentum_to_the_batch_ratio(name, batch, expected):
    cfg, msg = _scaled(name, batch)
    assert cfg.model.base_momentum == pytest.approx(expected, abs=1e-8)
    base = LazyConfig.load(str(CONFIGS / name)).model.base_momentum
    assert f"model.base_momentum {base:g} -> {expected:.6g}" in msg


def test_scaled_momentum_averages_over_the_same_images():
    """At 1/8 of the batch the momentum detector keeps the same share of its step-0 weights after
    the 8x longer run, and its schedule at each fraction of the run, compounded over the 8 steps
    that see one reference step's images, is the reference momentum."""
    ref = LazyConfig.load(str(CONFIGS / "pretrain_box_faster_rcnn_cpu.py"))
    cfg, _ = _scaled("pretrain_box_faster_rcnn_cpu.py", 16)
    k, b = ref.train.max_iter, ref.model.base_momentum
    k2, b2 = cfg.train.max_iter, cfg.model.base_momentum
    assert (k2, b2) == (k // 8, pytest.approx(b**8))
    assert initial_weight_share(k2, b2) == pytest.approx(initial_weight_share(k, b), rel=0.05)
    # Unscaled, the 8x shorter run would keep 13x more of the random init (0.68 against 0.053).
    assert initial_weight_share(k2, b) > 5 * initial_weight_share(k, b)
    # The paper schedule at batch 2: the cosine from 0.996 ** (1 / 8) matches the reference one to
    # first order in 1 - m; the end, 1.0, is scale-free.
    paper, _ = _scaled("pretrain_box_faster_rcnn.py", 2)
    k, k2, b2 = 88716, paper.train.max_iter, paper.model.base_momentum
    assert k2 == 8 * k
    for t in (0.0, 0.25, 0.5, 0.9):
        m = cosine_momentum(int(t * k), k, 0.996)
        assert cosine_momentum(8 * int(t * k), k2, b2) == pytest.approx(m ** (1 / 8), abs=1e-6)
    assert cosine_momentum(k2, k2, b2) == cosine_momentum(k, k, 0.996) == 1.0
    assert MomentumUpdateHook(b2).end == 1.0  # the trainer's hook takes only the base


def test_a_momentum_left_at_its_default_is_scaled_too():
    cfg = LazyConfig.load(str(CONFIGS / "pretrain_box_faster_rcnn.py"))
    del cfg.model["base_momentum"]  # MomentumPair's own default, 0.996
    cfg.dataloader.train.total_batch_size, cfg.train.auto_scale = 2, True
    msg = scale_to_batch(cfg)
    assert cfg.model.base_momentum == pytest.approx(0.99949912, abs=1e-8)
    assert "model.base_momentum 0.996 -> 0.999499" in msg


def test_momentum_is_untouched_without_auto_scale_or_an_ema():
    cfg, msg = _scaled("pretrain_box_faster_rcnn.py", 2, auto=False)
    assert cfg.model.base_momentum == 0.996 and "base_momentum" not in msg
    # A fine-tune detector has no EMA: nothing is added to its config.
    cfg, msg = _scaled("finetune_faster_rcnn.py", 2)
    assert "base_momentum" not in cfg.model and "base_momentum" not in msg


def test_train_net_saves_and_logs_the_scaled_momentum(tmp_path, monkeypatch):
    cfg = _train_net_at_batch_4("pretrain_box_faster_rcnn_cpu.py", tmp_path, monkeypatch)
    assert cfg.model.base_momentum == pytest.approx(0.9409)  # 0.97 ** (4 / 2)
    saved = LazyConfig.load(str(tmp_path / "config.yaml"))
    assert saved.model.base_momentum == pytest.approx(0.9409)
    assert "model.base_momentum 0.97 -> 0.9409" in (tmp_path / "log.txt").read_text()
    # The saved config is set for its batch: training from it (a resume, say) scales nothing again.
    assert saved.train.reference_batch_size == 4 and scale_to_batch(saved) is None
    assert saved.train.max_iter == 96 and saved.model.base_momentum == pytest.approx(0.9409)
