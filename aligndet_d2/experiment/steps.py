"""One training step of a detector's CPU config on fixed batches, pre-training or supervised:
what the step benchmarks measure (``benchmarks/speed.py`` its time and memory,
``benchmarks/step_ops.py`` its operators).

Arms: ``pretrain`` (momentum forward on view 2, online forward on view 1, contrastive loss,
backward, optimizer step, momentum update), ``supervised_frozen`` (the fine-tune config with every
backbone stage frozen), ``finetune`` (the fine-tune config as it is), ``supervised_adapters``
(frozen with parallel residual adapters) and, per detector, capacity arms (:data:`CAPACITY_ARMS`).
The step's phases are reported to a ``phase(name)`` context manager, nested where one runs inside
another (the pair's forward around its detectors').
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, List

from .detectors import get_detector
from .runner import REPO
from .stages import proposals_once

__all__ = ["ARMS", "CAPACITY_ARMS", "StepSetup", "build_step", "instrument", "run_step"]

COCO64 = REPO / "datasets" / "coco64"
WORK = REPO / "output" / "bench_speed"
ARMS = ("pretrain", "supervised_frozen", "finetune", "supervised_adapters")
# Capacity variants (Proper Reuse): arm -> fine-tune config, for the detectors that have one. Its
# model runs on the CPU config's bundled data (dataloader and class count of ``finetune``).
CAPACITY_ARMS = {
    "faster_rcnn": {
        "supervised_frozen_wide": get_detector("faster_rcnn").config(
            "finetune", "voc_cpu", "frozen_wide"
        )
    }
}

Phase = Callable[[str], ContextManager]


def _no_phase(name: str) -> ContextManager:
    return nullcontext()


def step_proposals() -> str:
    """Selective-search proposals of the bundled train images (made once, then reused)."""
    out = WORK / "coco64_train_proposals.json"
    proposals_once(
        str(COCO64 / "images"), out, coco_json=str(COCO64 / "annotations" / "train.json")
    )
    return str(out)


def step_clusters(proposals: str) -> str:
    """The proposals clustered as pretrain_box_detr_cpu.py expects (made once, then reused)."""
    from aligndet_d2.data.clusters import ClusterSettings, cluster_proposals

    out = WORK / "coco64_train_proposals_k16.json"
    if not out.exists():
        detr = get_detector("detr")
        settings = ClusterSettings(num_clusters=16, **detr.cluster_settings)
        cluster_proposals(
            proposals,
            str(COCO64 / "images"),
            detr.config("pretrain", "cpu"),
            str(out),
            settings,
        )
    return str(out)


def _load_cfg(path: str, overrides):
    from detectron2.config import LazyConfig

    return LazyConfig.apply_overrides(LazyConfig.load(str(REPO / path)), overrides)


@dataclass
class StepSetup:
    """A built arm: its model (train mode), optimizer, config and fixed batches."""

    detector: str
    arm: str
    model: Any
    optimizer: Any
    cfg: Any
    batches: List[Any]


def build_step(detector: str, arm: str, num_batches: int = 4) -> StepSetup:
    """Builds ``arm`` of ``detector`` (seeded) and loads ``num_batches`` batches of its loader."""
    import numpy as np
    import torch
    from detectron2.config import instantiate

    from aligndet_d2.modeling import FREEZE_ALL

    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    np.random.seed(0)
    det = get_detector(detector)
    paths = {"pretrain": det.config("pretrain", "cpu"), "finetune": det.config("finetune", "cpu")}
    common = ["dataloader.train.num_workers=0"]
    if arm == "pretrain":
        proposals = step_proposals()
        cfg = _load_cfg(
            paths["pretrain"],
            common
            + [
                "dataloader.train.dataset.json_file="
                + (step_clusters(proposals) if det.needs_clusters else proposals),
                f"dataloader.train.dataset.image_root={COCO64 / 'images'}",
            ],
        )
    elif arm in CAPACITY_ARMS.get(detector, {}):
        base = _load_cfg(paths["finetune"], common)
        cfg = _load_cfg(CAPACITY_ARMS[detector][arm], [])
        cfg.dataloader = base.dataloader
        cfg.model.roi_heads.num_classes = base.model.roi_heads.num_classes
    else:
        cfg = _load_cfg(paths["finetune"], common)
        net = cfg.model.backbone.get("bottom_up", cfg.model.backbone)  # DETR: no FPN
        if arm in ("supervised_frozen", "supervised_adapters"):
            net.freeze_at = FREEZE_ALL
        if arm == "supervised_adapters":
            net.adapters = "parallel"
    model = instantiate(cfg.model).train()
    cfg.optimizer.params.model = model
    opt = instantiate(cfg.optimizer)
    loader = iter(instantiate(cfg.dataloader.train))
    batches = [next(loader) for _ in range(num_batches)]
    if arm == "pretrain":
        model.copy_online_to_momentum()
    return StepSetup(detector, arm, model, opt, cfg, batches)


def _wrapped(fn: Callable, phase: Phase, name: str) -> Callable:
    def wrapper(*a, **k):
        with phase(name):
            return fn(*a, **k)

    return wrapper


@contextmanager
def instrument(setup: StepSetup, phase: Phase):
    """Reports the forward's phases to ``phase`` while inside: a pre-training step's momentum
    forward, online forward and contrastive loss (every call of ``box_contrastive_loss``, the
    fixed-set probe's too), or a supervised step's forward."""
    import aligndet_d2.modeling.momentum as momentum_module

    model = setup.model
    if setup.arm == "pretrain":
        saved = [
            (model.momentum, "forward_pretrain", model.momentum.forward_pretrain),
            (model.online, "forward_pretrain", model.online.forward_pretrain),
            (momentum_module, "box_contrastive_loss", momentum_module.box_contrastive_loss),
        ]
        names = ("momentum forward", "online forward", "contrastive loss")
    else:
        saved = [(model, "forward", model.forward)]
        names = ("forward",)
    for (obj, attr, fn), name in zip(saved, names):
        setattr(obj, attr, _wrapped(fn, phase, name))
    try:
        yield
    finally:
        for obj, attr, fn in saved:
            if obj is momentum_module:
                setattr(obj, attr, fn)
            else:
                delattr(obj, attr)  # back to the class's method


def run_step(setup: StepSetup, i: int, phase: Phase = _no_phase) -> None:
    """One step on batch ``i`` (cycling): forward, backward, optimizer step, and for
    pre-training the momentum update, each reported to ``phase``."""
    model, opt = setup.model, setup.optimizer
    losses = model(setup.batches[i % len(setup.batches)])
    loss = sum(losses.values())
    with phase("backward"):
        opt.zero_grad()
        loss.backward()
    with phase("optimizer step"):
        opt.step()
    if setup.arm == "pretrain":
        with phase("momentum update"):
            model.update_momentum(0.996)
