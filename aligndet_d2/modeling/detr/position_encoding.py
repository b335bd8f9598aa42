"""DETR's sine positional encoding of a feature map (Carion et al. 2020, section 3.2)."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["PositionEmbeddingSine"]


class PositionEmbeddingSine(nn.Module):
    """Sine / cosine of the normalised row and column of each unpadded position.

    Args:
        num_pos_feats: channels per axis; the encoding has ``2 * num_pos_feats`` (= d_model).
        temperature: the wavelength base.
        normalize: scale positions to ``[0, scale]`` over each image's unpadded extent.
        scale: the normalised range (DETR: 2 pi).
    """

    def __init__(
        self,
        num_pos_feats: int = 128,
        temperature: float = 10000.0,
        normalize: bool = True,
        scale: float = 2 * math.pi,
    ):
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = scale

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        """
        Args:
            mask: (B, H, W) bool, True at padding.

        Returns:
            (B, 2 * num_pos_feats, H, W) float32 encoding (y channels first, then x).
        """
        not_mask = (~mask).float()
        y = not_mask.cumsum(1)
        x = not_mask.cumsum(2)
        if self.normalize:
            eps = 1e-6
            y = y / (y[:, -1:, :] + eps) * self.scale
            x = x / (x[:, :, -1:] + eps) * self.scale
        i = torch.arange(self.num_pos_feats, dtype=torch.float32, device=mask.device)
        dim_t = self.temperature ** (
            2 * torch.div(i, 2, rounding_mode="floor") / self.num_pos_feats
        )
        px, py = x[..., None] / dim_t, y[..., None] / dim_t
        # Even channels take the sine, odd ones the cosine, interleaved.
        px = torch.stack((px[..., 0::2].sin(), px[..., 1::2].cos()), dim=4).flatten(3)
        py = torch.stack((py[..., 0::2].sin(), py[..., 1::2].cos()), dim=4).flatten(3)
        return torch.cat((py, px), dim=3).permute(0, 3, 1, 2)
