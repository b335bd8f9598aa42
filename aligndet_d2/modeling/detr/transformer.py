"""DETR's encoder-decoder transformer (post-norm, as in the paper) on ``nn.MultiheadAttention``."""

from __future__ import annotations

import copy
from typing import Tuple

import torch
from torch import nn

__all__ = ["DETRTransformer"]


def _ffn(d_model: int, dim_feedforward: int, dropout: float) -> nn.Sequential:
    """The feed-forward block of every layer: linear, ReLU, dropout, linear."""
    return nn.Sequential(
        nn.Linear(d_model, dim_feedforward),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(dim_feedforward, d_model),
    )


class _EncoderLayer(nn.Module):
    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.ffn = _ffn(d_model, dim_feedforward, dropout)
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.drop1, self.drop2 = nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, src, key_padding_mask, pos):
        q = k = src + pos
        src = self.norm1(
            src + self.drop1(self.self_attn(q, k, src, key_padding_mask=key_padding_mask)[0])
        )
        return self.norm2(src + self.drop2(self.ffn(src)))


class _DecoderLayer(nn.Module):
    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.cross_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.ffn = _ffn(d_model, dim_feedforward, dropout)
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(d_model) for _ in range(3))
        self.drop1, self.drop2, self.drop3 = (nn.Dropout(dropout) for _ in range(3))

    def forward(self, tgt, memory, memory_key_padding_mask, pos, query_pos):
        q = k = tgt + query_pos
        tgt = self.norm1(tgt + self.drop1(self.self_attn(q, k, tgt)[0]))
        attn = self.cross_attn(
            tgt + query_pos, memory + pos, memory, key_padding_mask=memory_key_padding_mask
        )[0]
        tgt = self.norm2(tgt + self.drop2(attn))
        return self.norm3(tgt + self.drop3(self.ffn(tgt)))


class DETRTransformer(nn.Module):
    """Encoder over the flattened feature map, decoder over learned queries.

    Args:
        d_model: width (DETR: 256).
        nhead: attention heads (8).
        num_encoder_layers: 6.
        num_decoder_layers: 6.
        dim_feedforward: FFN width (2048).
        dropout: 0.1.
    """

    def __init__(
        self,
        d_model: int = 256,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
    ):
        super().__init__()
        enc = _EncoderLayer(d_model, nhead, dim_feedforward, dropout)
        dec = _DecoderLayer(d_model, nhead, dim_feedforward, dropout)
        self.encoder = nn.ModuleList(copy.deepcopy(enc) for _ in range(num_encoder_layers))
        self.decoder = nn.ModuleList(copy.deepcopy(dec) for _ in range(num_decoder_layers))
        self.decoder_norm = nn.LayerNorm(d_model)
        self.d_model = d_model
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(
        self,
        src: torch.Tensor,
        mask: torch.Tensor,
        query_embed: torch.Tensor,
        pos: torch.Tensor,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            src: (B, d_model, H, W) projected backbone features.
            mask: (B, H, W) bool, True at padding.
            query_embed: (Q, d_model) learned query positions.
            pos: (B, d_model, H, W) positional encoding.

        Returns:
            (hs, memory): hs (L, B, Q, d_model), every decoder layer's output after the shared
            final norm; memory (B, d_model, H, W), the encoder output.
        """
        b, c, h, w = src.shape
        src = src.flatten(2).permute(2, 0, 1)  # (HW, B, C)
        pos = pos.flatten(2).permute(2, 0, 1)
        query_pos = query_embed.unsqueeze(1).repeat(1, b, 1)  # (Q, B, C)
        mask = mask.flatten(1)
        memory = src
        for layer in self.encoder:
            memory = layer(memory, mask, pos)
        tgt = torch.zeros_like(query_pos)
        hs = []
        for layer in self.decoder:
            tgt = layer(tgt, memory, mask, pos, query_pos)
            hs.append(self.decoder_norm(tgt))
        hs = torch.stack(hs).transpose(1, 2)  # (L, B, Q, C)
        return hs, memory.permute(1, 2, 0).view(b, c, h, w)
