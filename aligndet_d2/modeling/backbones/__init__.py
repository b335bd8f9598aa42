from .adapters import ADAPTER_MODES, AdaptedConv2d, adapter_parameters, check_adapter_switches
from .efficientnet_lite import FREEZE_ALL, EfficientNetLite
from .frozen_resnet import FrozenResNet

__all__ = [
    "ADAPTER_MODES",
    "AdaptedConv2d",
    "EfficientNetLite",
    "FREEZE_ALL",
    "FrozenResNet",
    "adapter_parameters",
    "check_adapter_switches",
]
