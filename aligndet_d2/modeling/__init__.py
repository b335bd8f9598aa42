"""Box-domain pre-training models: the momentum pair, the contrastive loss, per-detector heads."""

from .backbones import (
    ADAPTER_MODES,
    FREEZE_ALL,
    AdaptedConv2d,
    EfficientNetLite,
    FrozenResNet,
    adapter_parameters,
    check_adapter_switches,
)
from .cascade import ContrastiveCascadeROIHeads
from .contrastive import BACKGROUND_ID, ProjectionMLP, box_contrastive_loss
from .dense import AlignDetFCOS, AlignDetRetinaNet, ContrastiveFCOSHead, ContrastiveRetinaNetHead
from .fcos import AMPSafeFCOS
from .momentum import MomentumPair, cosine_momentum
from .rcnn import AlignDetRCNN, ContrastiveOutputLayers, ContrastiveROIHeads

__all__ = [
    "ADAPTER_MODES",
    "AdaptedConv2d",
    "AMPSafeFCOS",
    "AlignDetFCOS",
    "AlignDetRCNN",
    "AlignDetRetinaNet",
    "ContrastiveCascadeROIHeads",
    "ContrastiveFCOSHead",
    "ContrastiveRetinaNetHead",
    "BACKGROUND_ID",
    "ContrastiveOutputLayers",
    "ContrastiveROIHeads",
    "EfficientNetLite",
    "FREEZE_ALL",
    "FrozenResNet",
    "MomentumPair",
    "ProjectionMLP",
    "adapter_parameters",
    "box_contrastive_loss",
    "check_adapter_switches",
    "cosine_momentum",
]
