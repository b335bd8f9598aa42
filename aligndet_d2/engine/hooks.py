"""Training hooks of box-domain pre-training."""

from __future__ import annotations

import logging

from detectron2.engine import HookBase
from torch.nn.parallel import DistributedDataParallel

from ..modeling.momentum import MomentumPair, cosine_momentum, initial_weight_share

logger = logging.getLogger(__name__)

__all__ = ["MomentumUpdateHook", "unwrap_model"]


def unwrap_model(model):
    """The module inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


class MomentumUpdateHook(HookBase):
    """Updates the momentum detector after every optimizer step and logs the momentum.

    ``m = end - (end - base) * (cos(pi * k / K) + 1) / 2`` with ``k`` the iteration just run
    (0-based) and ``K`` the trainer's ``max_iter``. Before the first iteration of a fresh run (not a
    resumed one), the momentum detector is made an exact copy of the online one, after the initial
    weights have been loaded (the reference re-initialises it by accident instead). At the start it
    logs the schedule and how much of the momentum detector will still be its step-0 weights at the
    end of the run (:func:`~aligndet_d2.modeling.momentum.initial_weight_share`).
    """

    def __init__(self, base_momentum: float = 0.996, end_momentum: float = 1.0):
        self.base = base_momentum
        self.end = end_momentum

    def _pair(self) -> MomentumPair:
        pair = unwrap_model(self.trainer.model)
        if not isinstance(pair, MomentumPair):
            raise TypeError(
                f"MomentumUpdateHook needs a MomentumPair model, got {type(pair).__name__}"
            )
        return pair

    def before_train(self):
        if self.trainer.start_iter == 0:
            self._pair().copy_online_to_momentum()
        k = self.trainer.max_iter
        share = initial_weight_share(k, self.base, self.end)
        logger.info(
            f"momentum: {self.base} -> {self.end} (cosine) over {k} iterations; at the end "
            f"{100 * share:.1f} % of the momentum detector's trainable weights will still be their "
            "step-0 values (for a fresh neck and heads: their random init)"
            + (" -- lower model.base_momentum for a run this short" if share > 0.1 else "")
        )

    def after_step(self):
        m = cosine_momentum(self.trainer.iter, self.trainer.max_iter, self.base, self.end)
        self._pair().update_momentum(m)
        self.trainer.storage.put_scalar("momentum", m, smoothing_hint=False)
