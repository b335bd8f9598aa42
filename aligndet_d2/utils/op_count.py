"""Counts of the aten operators a piece of code dispatches, per phase, and of those that wait for
the device (host syncs).

At 2 images per GPU a training step is bound by kernel launches and host-device syncs rather than
by flops, so the number of operators ranks step costs across code versions the way GPU times do,
and can be measured on a CPU. :class:`OpCounter` is a ``TorchDispatchMode``: every operator that
reaches the dispatcher while it is active, forward and backward, is counted under the phase
open at that moment (:meth:`OpCounter.phase`; phases nest, the innermost counts).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List

import torch
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["SYNC_OPS", "OpCounter", "is_host_sync"]

# Operators whose result the host must wait for: a scalar read (.item(), float(), bool()), or an
# output whose shape depends on the data.
SYNC_OPS = frozenset(
    {
        "_local_scalar_dense",
        "is_nonzero",
        "nonzero",
        "nonzero_static",
        "masked_select",
        "_unique2",
        "unique_dim",
        "unique_consecutive",
        "equal",
        "allclose",
        "bincount",
        "histc",
    }
)


def _has_bool_index(args: Any) -> bool:
    indices = args[1] if len(args) > 1 else ()
    if isinstance(indices, torch.Tensor):
        indices = [indices]
    return any(
        isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8)
        for i in (indices or ())
        if i is not None
    )


def is_host_sync(name: str, args: Any, kwargs: Dict[str, Any]) -> bool:
    """Whether an aten operator (by its packet name and arguments) makes the host wait."""
    if name in SYNC_OPS:
        return True
    if name in ("index", "index_put", "index_put_"):  # x[mask]: a nonzero inside the kernel
        return _has_bool_index(args)
    if name == "repeat_interleave":  # without output_size the output length is data
        return kwargs.get("output_size") is None and (len(args) < 4 or args[3] is None)
    return False


class OpCounter(TorchDispatchMode):
    """Counts dispatched aten operators by phase.

    Example::

        counter = OpCounter()
        with counter:
            with counter.phase("forward"):
                loss = model(x).sum()
            with counter.phase("backward"):
                loss.backward()
        counter.total("forward"), counter.syncs["forward"]

    Attributes:
        ops: {phase: Counter({operator name: calls})}.
        syncs: {phase: Counter({operator name: calls})} of the host-sync operators.
    """

    def __init__(self, base_phase: str = "other"):
        super().__init__()
        self.ops: Dict[str, Counter] = defaultdict(Counter)
        self.syncs: Dict[str, Counter] = defaultdict(Counter)
        self._stack: List[str] = [base_phase]

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Counts what runs inside under ``name``."""
        self._stack.append(name)
        try:
            yield
        finally:
            self._stack.pop()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        phase = self._stack[-1]
        self.ops[phase][name] += 1
        if is_host_sync(name, args, kwargs):
            self.syncs[phase][name] += 1
        return func(*args, **kwargs)

    def total(self, phase: str = None) -> int:
        """Operators of one phase, or of all."""
        if phase is not None:
            return sum(self.ops[phase].values())
        return sum(sum(c.values()) for c in self.ops.values())

    def total_syncs(self, phase: str = None) -> int:
        """Host-sync operators of one phase, or of all."""
        if phase is not None:
            return sum(self.syncs[phase].values())
        return sum(sum(c.values()) for c in self.syncs.values())

    def clear(self) -> None:
        self.ops.clear()
        self.syncs.clear()
