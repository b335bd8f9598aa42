"""The stages every caller of the pipeline shares, each done once and skipped when its output
exists: proposals, export, and a ``train_net.py`` run (pre-training or fine-tuning) declared as a
:class:`Run`."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

from .runner import train_net_resumable

__all__ = ["Run", "export_once", "proposals_once"]


def proposals_once(
    image_root: str,
    out: Path,
    *,
    coco_json: Optional[str] = None,
    mode: str = "soco",
    min_size: Optional[float] = None,
    workers: int = 1,
    progress: bool = False,
) -> Optional[float]:
    """Selective-search proposals of the images of ``image_root`` (of ``coco_json`` where given)
    into ``out``, unless it exists (an interrupted run continues). ``min_size``: the filter's
    smallest box side, None for the default. Returns the seconds it took, or None when it
    existed."""
    from aligndet_d2.data.proposals import ProposalFilter, ProposalSettings, generate_proposals

    if out.exists():
        return None
    t = time.time()
    box_filter = ProposalFilter() if min_size is None else ProposalFilter(min_size=min_size)
    generate_proposals(
        image_root,
        str(out),
        coco_json=coco_json,
        settings=ProposalSettings(mode=mode, filter=box_filter),
        num_workers=workers,
        progress=progress,
    )
    return time.time() - t


def export_once(pretrain_run: Path, *, keep_reg: bool = False, drop_rpn: bool = False) -> Path:
    """The export of ``pretrain_run/model_final.pth`` (tools/export.py's switches), made once
    beside it as ``exported[_keep_reg][_drop_rpn].pth``."""
    from aligndet_d2.checkpoint.export import export_checkpoint

    out = pretrain_run / f"exported{'_keep_reg' * keep_reg}{'_drop_rpn' * drop_rpn}.pth"
    if not out.exists():
        export_checkpoint(str(pretrain_run / "model_final.pth"), str(out), keep_reg, drop_rpn)
    return out


@dataclass(frozen=True)
class Run:
    """One ``train_net.py`` run: a config and the overrides that make it this run.

    Attributes:
        config: the config path, relative to the repository root.
        max_iter: ``train.max_iter``.
        seed: ``train.seed``.
        data: the dataset overrides (``dataloader.train.dataset....=...``).
        init: ``train.init_checkpoint`` (a fine-tune: "" from scratch, or an export); None keeps
            the config's.
        eval_period, checkpoint_period, log_period: ``train.*`` periods; None keeps the config's.
        extra: further ``key=value`` overrides, applied last (they win).
    """

    config: str
    max_iter: int
    seed: int
    data: Tuple[str, ...] = ()
    init: Optional[str] = None
    eval_period: Optional[int] = None
    checkpoint_period: Optional[int] = None
    log_period: Optional[int] = None
    extra: Tuple[str, ...] = ()

    def args(self) -> List[str]:
        """train_net.py's arguments for this run."""
        args = ["--config-file", self.config, *self.data]
        if self.init is not None:
            args.append(f"train.init_checkpoint={self.init}")
        args.append(f"train.max_iter={self.max_iter}")
        if self.eval_period is not None:
            args.append(f"train.eval_period={self.eval_period}")
        args.append(f"train.seed={self.seed}")
        if self.checkpoint_period is not None:
            args.append(f"train.checkpointer.period={self.checkpoint_period}")
        if self.log_period is not None:
            args.append(f"train.log_period={self.log_period}")
        return args + list(self.extra)

    def train(self, out_dir: Path) -> float:
        """Runs it into ``out_dir`` (resuming an interrupted run); returns the wall time (s)."""
        return train_net_resumable(self.args(), out_dir)
