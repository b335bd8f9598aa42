"""Linear scaling of the lr and schedule to the batch a run really uses.

The paper configs are set for 16 images per batch (8 GPUs x 2). With ``train.auto_scale=True``
and a total batch ``B`` other than ``train.reference_batch_size`` (``R``), the lr is multiplied by
``B / R`` and the iteration counts by ``R / B`` (Goyal et al. 2017, as Detectron2's
``DefaultTrainer.auto_scale_workers`` does for yacs configs): ``train.max_iter``,
``train.checkpointer.period`` and ``train.eval_period``. The lr steps and the warmup follow, since
LazyConfig schedules are fractions of ``train.max_iter`` (Detectron2 wraps them in
``LRMultiplier``): the run sees the same number of images at each lr.
"""

from __future__ import annotations

from typing import Optional

__all__ = ["BatchScalingError", "scale_to_batch"]


class BatchScalingError(ValueError):
    """``train.auto_scale`` on a config without a usable ``train.reference_batch_size``."""


def _iters(n: int, factor: float) -> int:
    return max(1, int(round(n * factor))) if n > 0 else n


def scale_to_batch(cfg) -> Optional[str]:
    """Rescales ``cfg`` in place for its total batch; returns what it did (or a warning that it
    did not) for the log, None when the batch is the reference one.

    Args:
        cfg: a LazyConfig with ``dataloader.train.total_batch_size``, ``optimizer.lr``,
            ``train.max_iter``, and ``train.reference_batch_size`` / ``train.auto_scale``.

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
    return (
        f"train.auto_scale: total batch {batch} against {ref} (x{f:g}): "
        + ", ".join(f"{n} {a:g} -> {b:g}" for n, a, b in zip(names, old, new))
        + "; the lr steps and warmup, fractions of train.max_iter, follow it"
    )
