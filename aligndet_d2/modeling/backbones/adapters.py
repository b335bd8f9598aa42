"""Residual adapters beside a frozen backbone (Rebuffi et al., NeurIPS 2017 and CVPR 2018).

Proper Reuse (CVPR 2022) keeps the ImageNet backbone frozen in detection training and trains small
residual adapters beside it. An adapter here is a 1x1 convolution without bias or norm whose
weights start at zero, so at step 0 the adapted backbone computes exactly what the frozen one does;
only the adapters train. Two placements, as in Rebuffi et al.:

- ``"parallel"`` (2018, the default: it adapted better than the series form there): the adapter
  reads a layer's input and its output is added to the layer's output;
- ``"series"`` (2017): the adapter reads the layer's output and adds to it (``y + A(y)``).

Where they go, per backbone (``model.backbone.bottom_up.adapters``):

- Detectron2's ResNet (:class:`~aligndet_d2.modeling.FrozenResNet`): beside every spatial (3x3)
  convolution of the residual stages, before its norm, as Rebuffi et al. place them. In a
  bottleneck that conv is the narrow one, so R-50 gets 1.26 M adapter parameters (5 % of it).
- EfficientNet-Lite (:class:`~aligndet_d2.modeling.EfficientNetLite`): beside every MBConv block,
  input to output. A 1x1 conv beside the depthwise conv would act on the 6x-expanded channels and
  outweigh the backbone; beside the block it reads the narrow tensor (0.25 M parameters for Lite0).

In formulas, with ``A`` the adapter: a ResNet conv computes ``act(norm(conv(x) + A(x)))``
(parallel, ``A`` with the conv's stride) or ``act(norm(y + A(y)))`` with ``y = conv(x)`` (series),
both before the frozen norm; an EfficientNet-Lite block ``block(x) + A(x)`` or ``y + A(y)`` with
``y = block(x)``, after the block's own norms and skip.

Our choice: no BatchNorm inside the adapter (Rebuffi et al. have one): with 2 images per batch its
statistics would be noise, and in a ResNet the frozen layer's own norm follows the adapter anyway.
Adapters are off in AlignDet pre-training (the neck and heads are aligned to the plain frozen
backbone) and on in fine-tuning, where they start from zero; an export has no adapter keys.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Iterator, Optional, Tuple

import torch
import torch.nn.functional as F
from detectron2.layers import Conv2d
from torch import nn

__all__ = [
    "ADAPTER_MODES",
    "AdaptedConv2d",
    "adapter_parameters",
    "check_adapter_switches",
    "check_mode",
    "is_adapter_key",
    "zero_conv1x1",
]

ADAPTER_MODES = ("parallel", "series")

# State-dict keys of adapters: "...conv2.adapter.weight" (ResNet), "...adapters.3.weight" (Lite).
_ADAPTER_KEY = re.compile(r"(^|\.)adapters?\.")

logger = logging.getLogger(__name__)


def check_mode(mode: Optional[str], backbone: str) -> Optional[str]:
    """Validates an ``adapters`` argument: None (no adapters) or one of :data:`ADAPTER_MODES`."""
    if mode is not None and mode not in ADAPTER_MODES:
        raise ValueError(
            f"{backbone}: adapters={mode!r} (allowed: None, " + ", ".join(ADAPTER_MODES) + ")"
        )
    return mode


def is_adapter_key(key: str) -> bool:
    """Whether a state-dict key belongs to a residual adapter (such keys start from zero)."""
    return bool(_ADAPTER_KEY.search(key))


def adapter_parameters(module: nn.Module) -> int:
    """Number of adapter parameters in ``module``."""
    return sum(p.numel() for name, p in module.named_parameters() if is_adapter_key(name))


def zero_conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """A bias-free 1x1 convolution whose weights are zero: an adapter that adds nothing yet."""
    conv = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
    nn.init.zeros_(conv.weight)
    return conv


def log_adapters(backbone: nn.Module, mode: str, where: str) -> None:
    n = adapter_parameters(backbone)
    total = sum(p.numel() for p in backbone.parameters())
    logger.info(
        f"{type(backbone).__name__}: {mode} residual adapters {where}: {n:,} trainable parameters "
        f"({100 * n / max(total - n, 1):.1f} % of the frozen backbone's {total - n:,})"
    )


class AdaptedConv2d(Conv2d):
    """Detectron2's ``Conv2d`` with a residual adapter added before its norm and activation.

    Its state dict is the wrapped conv's (``weight``, ``norm.*``) plus ``adapter.weight``, so
    backbone checkpoints without adapters load into it and vice versa (the adapter left at zero).
    """

    def __init__(self, *args, mode: str = "parallel", **kwargs):
        super().__init__(*args, **kwargs)
        self.mode = check_mode(mode, "AdaptedConv2d")
        cin = self.in_channels if mode == "parallel" else self.out_channels
        stride = self.stride[0] if mode == "parallel" else 1
        self.adapter = zero_conv1x1(cin, self.out_channels, stride)

    @classmethod
    def wrap(cls, conv: Conv2d, mode: str) -> "AdaptedConv2d":
        """An adapted conv that shares ``conv``'s parameters, norm and activation."""
        new = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=conv.bias is not None,
            norm=conv.norm,
            activation=conv.activation,
            mode=mode,
        )
        new.weight, new.bias = conv.weight, conv.bias
        return new.to(conv.weight.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: (N, C_in, H, W).

        Returns:
            (N, C_out, H', W'): activation(norm(.)) of conv(x) + adapter(x) (parallel) or of
            y + adapter(y) with y = conv(x) (series).
        """
        y = F.conv2d(
            x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups
        )
        y = y + self.adapter(x if self.mode == "parallel" else y)
        if self.norm is not None:
            y = self.norm(y)
        if self.activation is not None:
            y = self.activation(y)
        return y


def _lazy_nodes(node: Any, path: str) -> Iterator[Tuple[str, Any]]:
    if hasattr(node, "items"):
        if "_target_" in node:
            yield path, node
        for k, v in node.items():
            yield from _lazy_nodes(v, f"{path}.{k}")
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield from _lazy_nodes(v, f"{path}[{i}]")


def check_adapter_switches(model_cfg: Any, *, pretraining: bool, path: str = "model") -> None:
    """Refuses an ``adapters`` switch that cannot work, before the model is built.

    Args:
        model_cfg: the LazyConfig model node.
        pretraining: whether the config pre-trains (adapters train only in fine-tuning).
        path: name of ``model_cfg`` in messages.

    Raises:
        ValueError: naming the config node and the backbones that have adapters.
    """
    from detectron2.utils.registry import _convert_target_to_string, locate

    for where, node in _lazy_nodes(model_cfg, path):
        if "adapters" not in node:
            continue
        target = node["_target_"]
        cls = locate(target) if isinstance(target, str) else target
        name = _convert_target_to_string(cls) if cls is not None else str(target)
        if not getattr(cls, "supports_adapters", False):
            raise ValueError(
                f"{where}.adapters={node['adapters']!r}: backbone {name} has no residual "
                "adapters; backbones with adapters: aligndet_d2.modeling.FrozenResNet "
                "(Detectron2's ResNet, frozen) and aligndet_d2.modeling.EfficientNetLite"
            )
        if pretraining and node["adapters"] is not None:
            raise ValueError(
                f"{where}.adapters={node['adapters']!r}: adapters are for fine-tuning; AlignDet "
                "pre-training aligns the neck and heads to the plain frozen backbone"
            )
