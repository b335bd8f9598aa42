"""Detectron2's ResNet with every stage frozen, optionally with residual adapters beside it."""

from __future__ import annotations

from typing import Dict, Optional

import torch
from detectron2.layers import Conv2d
from detectron2.modeling import ResNet

from .adapters import AdaptedConv2d, check_mode, log_adapters

__all__ = ["FrozenResNet"]


class FrozenResNet(ResNet):
    """A :class:`detectron2.modeling.ResNet` with every stage frozen: the backbone of AlignDet
    pre-training and of frozen-backbone fine-tuning (Proper Reuse, CVPR 2022).

    Use ``norm="FrozenBN"`` in its stem and stages (the model zoo's R-50 configs do). Without
    adapters the forward runs under ``no_grad``. With ``adapters`` (fine-tuning only) every 3x3
    conv of the residual stages gets a residual adapter that starts at zero
    (:mod:`aligndet_d2.modeling.backbones.adapters`); only the adapters train. The state dict is
    that of ``ResNet`` plus the adapters' ``*.adapter.weight``, so checkpoints move freely between
    the two.
    """

    supports_adapters = True

    def __init__(
        self,
        stem,
        stages,
        num_classes=None,
        out_features=None,
        freeze_at: int = 5,
        adapters: Optional[str] = None,
    ):
        """
        Args:
            stem, stages, num_classes, out_features: as ``ResNet``.
            freeze_at: must freeze the stem and every stage (``1 + len(stages)`` or more).
            adapters: None, ``"parallel"`` or ``"series"``.
        """
        if freeze_at < 1 + len(stages):
            raise ValueError(
                f"FrozenResNet freezes everything: freeze_at={freeze_at} must be >= "
                f"{1 + len(stages)}"
            )
        super().__init__(stem, stages, num_classes, out_features, freeze_at)
        self.adapters = check_mode(adapters, "FrozenResNet")
        if self.adapters:
            for stage in self.stages:
                for block in stage.children():
                    for name, conv in list(block.named_children()):
                        if type(conv) is Conv2d and conv.kernel_size != (1, 1):
                            setattr(block, name, AdaptedConv2d.wrap(conv, self.adapters))
            log_adapters(self, self.adapters, "beside every 3x3 conv of res2-res5")

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """
        Args:
            x: (N, 3, H, W) normalised images.

        Returns:
            dict of (N, C_k, H / s_k, W / s_k) features for each of ``out_features``.
        """
        if self.adapters:
            # Frozen weights take no gradient; autograd records only what the adapters feed.
            return super().forward(x)
        # Nothing here trains: no graph, no activations kept for a backward pass.
        with torch.no_grad():
            return super().forward(x)
