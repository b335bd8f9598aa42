"""Writing training metrics from model code, which also runs outside a trainer (tools, tests)."""

from __future__ import annotations

import contextlib
from typing import Iterator

from detectron2.utils.events import EventStorage, get_event_storage

__all__ = ["put_scalar", "discarded_metrics"]


def put_scalar(name: str, value: float, **kwargs) -> None:
    """``get_event_storage().put_scalar(name, value, **kwargs)``, a no-op outside a trainer."""
    try:
        storage = get_event_storage()
    except AssertionError:  # no EventStorage: called from a tool or a test
        return
    storage.put_scalar(name, value, **kwargs)


@contextlib.contextmanager
def discarded_metrics() -> Iterator[None]:
    """Everything written to the event storage inside the block is thrown away.

    The momentum branch runs the same Detectron2 code as the online one (the RPN puts
    ``rpn/num_pos_anchors``, the ROI heads ``roi_head/num_fg_samples``): inside this block its
    writes go to a private storage, so the logged values are the online branch's alone.
    """
    try:
        it = get_event_storage().iter
    except AssertionError:
        it = 0
    with EventStorage(start_iter=it):
        yield
