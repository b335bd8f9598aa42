"""Detectron2's ResNet with every stage frozen and its forward under ``no_grad``."""

from __future__ import annotations

from typing import Dict

import torch
from detectron2.modeling import ResNet

__all__ = ["FrozenResNet"]


class FrozenResNet(ResNet):
    """A :class:`detectron2.modeling.ResNet` for box-domain pre-training: every stage frozen.

    Use ``norm="FrozenBN"`` in its stem and stages (the model zoo's R-50 configs do). Its state dict
    is that of ``ResNet``, so checkpoints move freely between the two.
    """

    def __init__(self, stem, stages, num_classes=None, out_features=None, freeze_at: int = 5):
        if freeze_at < 1 + len(stages):
            raise ValueError(
                f"FrozenResNet freezes everything: freeze_at={freeze_at} must be >= "
                f"{1 + len(stages)}"
            )
        super().__init__(stem, stages, num_classes, out_features, freeze_at)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        # Nothing here trains: no graph, no activations kept for a backward pass.
        with torch.no_grad():
            return super().forward(x)
