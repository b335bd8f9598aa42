"""Training hooks: the momentum update of box-domain pre-training, and an evaluation hook that
resumes."""

from __future__ import annotations

import json
import logging
import os
from typing import Callable, Dict, Optional

from detectron2.engine import HookBase, hooks
from detectron2.evaluation.testing import flatten_results_dict
from detectron2.utils import comm
from torch.nn.parallel import DistributedDataParallel

from ..modeling.momentum import MomentumPair, cosine_momentum, initial_weight_share

logger = logging.getLogger(__name__)

__all__ = ["MomentumUpdateHook", "ResumingEvalHook", "unwrap_model"]


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


class ResumingEvalHook(hooks.EvalHook):
    """Detectron2's :class:`~detectron2.engine.hooks.EvalHook` that also runs, when a run resumes,
    the periodic evaluation the interrupted run was doing.

    Detectron2 saves a periodic checkpoint before the evaluation of the same iteration (so that a
    failing evaluation leaves a checkpoint to debug). A run stopped during that evaluation resumes
    after it, and the evaluation would be missing from ``metrics.json`` for good. So when a run
    resumes from a checkpoint of an evaluation iteration, this hook looks in ``metrics.json`` for
    that iteration's evaluation (the keys of ``eval_results.json``, the last evaluation written)
    and runs it before the first step when it is not there, logged under that iteration.

    Args:
        eval_period: as in Detectron2's ``EvalHook``.
        eval_function: as in Detectron2's ``EvalHook``; it writes ``eval_results.json`` to
            ``output_dir``.
        output_dir: the run's ``train.output_dir``.
    """

    def __init__(
        self, eval_period: int, eval_function: Callable[[], Optional[Dict]], output_dir: str
    ):
        super().__init__(eval_period, eval_function)
        self._output_dir = output_dir

    def _evaluated(self, iteration: int) -> bool:
        """Whether ``metrics.json`` holds an evaluation logged at ``iteration`` (0-based)."""
        try:
            with open(os.path.join(self._output_dir, "eval_results.json")) as f:
                keys = set(flatten_results_dict(json.load(f)))
            with open(os.path.join(self._output_dir, "metrics.json")) as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return False
        recs = [json.loads(line) for line in lines]
        return any(r.get("iteration") == iteration and keys & set(r) for r in recs)

    def before_train(self):
        start = self.trainer.start_iter
        if not (
            self._period > 0 and 0 < start < self.trainer.max_iter and start % self._period == 0
        ):
            return
        # Every process must take the same branch: the evaluation is distributed.
        missing = not self._evaluated(start - 1) if comm.is_main_process() else None
        missing = comm.all_gather(missing)[0]
        if missing:
            logger.info(
                f"resumed at iteration {start}: running the evaluation after iteration "
                f"{start - 1}, which the interrupted run did not write"
            )
            storage = self.trainer.storage
            storage.iter = start - 1
            try:
                self._do_eval()
            finally:
                storage.iter = start
