"""Optimizer pieces the DETR configs need and Detectron2's LazyConfig solver lacks."""

from __future__ import annotations

from typing import Iterable

import torch

__all__ = ["ClipGradAdamW", "backbone_lr_factor"]


class ClipGradAdamW(torch.optim.AdamW):
    """AdamW that clips the global gradient norm of its parameters before every step (DETR: 0.1).

    Under AMP, Detectron2's ``AMPTrainer`` unscales the gradients before calling ``step``, so the
    norm is clipped on the true gradients.

    Args:
        params: parameters or parameter groups, as for ``torch.optim.AdamW``.
        max_norm: the largest total norm of all gradients.
        norm_type: the norm (2: Euclidean).
        **kwargs: AdamW's own arguments (``lr``, ``weight_decay``, ...).
    """

    def __init__(self, params: Iterable, *, max_norm: float, norm_type: float = 2.0, **kwargs):
        super().__init__(params, **kwargs)
        if max_norm <= 0:
            raise ValueError(f"max_norm must be positive, got {max_norm}")
        self.max_norm = max_norm
        self.norm_type = norm_type

    @torch.no_grad()
    def step(self, closure=None):
        params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(params, self.max_norm, self.norm_type)
        return super().step(closure)


def backbone_lr_factor(name: str, factor: float = 0.1) -> float:
    """``lr_factor_func`` of Detectron2's ``get_default_optimizer_params``: ``factor`` for the
    backbone's parameters (DETR trains its backbone at a tenth of the lr), 1 for the rest."""
    return factor if name.startswith("backbone.") else 1.0
