"""Scaling of the lr, the schedule and the EMA momentum to the batch a run really uses.

The paper configs are set for 16 images per batch (8 GPUs x 2). With ``train.auto_scale=True``
and a total batch ``B`` other than ``train.reference_batch_size`` (``R``), the lr is multiplied by
``B / R`` and the iteration counts by ``R / B`` (Goyal et al. 2017, as Detectron2's
``DefaultTrainer.auto_scale_workers`` does for yacs configs): ``train.max_iter``,
``train.checkpointer.period`` and ``train.eval_period``. The lr steps and the warmup follow, since
LazyConfig schedules are fractions of ``train.max_iter`` (Detectron2 wraps them in
``LRMultiplier``): the run sees the same number of images at each lr. ``train.reference_batch_size``
becomes ``B``, so the config the run saves is set for its batch and is not rescaled again.

A pre-training config's EMA momentum (``model.base_momentum`` of a
:class:`~aligndet_d2.modeling.MomentumPair`, the start of its cosine schedule) becomes
``base ** (B / R)``: the EMA scaling rule (Busbridge et al. 2023, "How to Scale Your EMA"; BYOL and
MoCo runs scale their momentum with the batch in the same way). ``1 / (1 - m)`` steps is the span
an EMA averages over; keeping it the same number of images needs ``R / B`` times the steps, and
``R / B`` steps of ``m ** (B / R)`` forget what one step of ``m`` does. E.g. 0.996 at ``R = 16``
(a span of 250 steps, 4000 images) becomes ``0.996 ** (2 / 16) = 0.9995`` at ``B = 2`` (2000
steps, 4000 images); left at 0.996 it would average over 500 images. So
:func:`~aligndet_d2.modeling.momentum.initial_weight_share` stays about the same after the rescaled
``train.max_iter``. The schedule's end, 1.0, is its own power and needs nothing; in between, with
``f = B / R``, the cosine from the new base, ``1 - (1 - base ** f) c``, equals the reference one
raised to ``f``, ``m ** f``, to first order in ``1 - base``, where the rule holds.
"""

from __future__ import annotations

import inspect
from typing import Any, Optional

__all__ = ["BatchScalingError", "scale_to_batch"]


class BatchScalingError(ValueError):
    """``train.auto_scale`` on a config without a usable ``train.reference_batch_size``."""


def _iters(n: int, factor: float) -> int:
    return max(1, int(round(n * factor))) if n > 0 else n


def _base_momentum(model_cfg: Any) -> Optional[float]:
    """The config's EMA base momentum, or None for a model without one (a fine-tune detector).

    A model whose config leaves ``base_momentum`` at its default (``MomentumPair``'s 0.996) has it
    too: scaling must not skip it because the config did not spell it out.
    """
    if model_cfg is None or not hasattr(model_cfg, "get"):
        return None
    if "base_momentum" in model_cfg:
        return float(model_cfg["base_momentum"])
    target = model_cfg.get("_target_")
    try:
        if isinstance(target, str):
            from detectron2.utils.registry import locate

            target = locate(target)
        param = inspect.signature(target).parameters.get("base_momentum") if target else None
    except (ImportError, TypeError, ValueError):  # instantiate() will name a bad target
        return None
    if param is None or param.default is inspect.Parameter.empty:
        return None
    return float(param.default)


def scale_to_batch(cfg) -> Optional[str]:
    """Rescales ``cfg`` in place for its total batch; returns what it did (or a warning that it
    did not) for the log, None when the batch is the reference one.

    Args:
        cfg: a LazyConfig with ``dataloader.train.total_batch_size``, ``optimizer.lr``,
            ``train.max_iter``, and ``train.reference_batch_size`` / ``train.auto_scale``; for
            pre-training, ``model.base_momentum`` (scaled to ``base ** (B / R)``).

    Raises:
        BatchScalingError: ``train.auto_scale`` without a positive ``train.reference_batch_size``.
    """
    train = cfg.train
    auto = bool(train.get("auto_scale", False))
    ref = train.get("reference_batch_size")
    batch = cfg.dataloader.train.get("total_batch_size")
    if auto and (not isinstance(ref, int) or ref <= 0):
        raise BatchScalingError(
            f"train.auto_scale=True needs train.reference_batch_size, the total batch the config's "
            f"lr and schedule are set for (a positive int); this config has {ref!r}"
        )
    if ref is None or batch is None or batch == ref:
        return None
    if not auto:
        return (
            f"the total batch is {batch} but the lr and schedule are set for "
            f"{ref} (train.reference_batch_size): train.auto_scale=True rescales them"
        )
    f = batch / ref
    old = (cfg.optimizer.lr, train.max_iter, train.checkpointer.period, train.eval_period)
    cfg.optimizer.lr = cfg.optimizer.lr * f
    train.max_iter = _iters(train.max_iter, 1 / f)
    train.checkpointer.period = _iters(train.checkpointer.period, 1 / f)
    train.eval_period = _iters(train.eval_period, 1 / f)
    new = (cfg.optimizer.lr, train.max_iter, train.checkpointer.period, train.eval_period)
    names = ("optimizer.lr", "train.max_iter", "train.checkpointer.period", "train.eval_period")
    changes = [f"{n} {a:g} -> {b:g}" for n, a, b in zip(names, old, new)]
    base = _base_momentum(cfg.get("model"))
    if base is not None:
        cfg.model.base_momentum = base**f
        changes.append(
            f"model.base_momentum {base:g} -> {cfg.model.base_momentum:.6g} ({base:g} ** {f:g}, "
            "the EMA averages over as many images as at the reference batch)"
        )
    # The config is now set for this batch: saying so keeps the config.yaml the run saves from
    # being rescaled again when it is trained from (``--config-file <output>/config.yaml``), as
    # Detectron2's auto_scale_workers sets REFERENCE_WORLD_SIZE.
    train.reference_batch_size = batch
    changes.append(f"train.reference_batch_size {ref} -> {batch}")
    return (
        f"train.auto_scale: total batch {batch} against {ref} (x{f:g}): "
        + ", ".join(changes)
        + "; the lr steps and warmup, fractions of train.max_iter, follow it"
    )
