from .efficientnet_lite import FREEZE_ALL, EfficientNetLite
from .frozen_resnet import FrozenResNet

__all__ = ["EfficientNetLite", "FREEZE_ALL", "FrozenResNet"]
