"""Box-domain pre-training models: the momentum pair, the contrastive loss, per-detector heads."""

from .backbones import FREEZE_ALL, EfficientNetLite, FrozenResNet
from .contrastive import BACKGROUND_ID, ProjectionMLP, box_contrastive_loss
from .dense import AlignDetFCOS, AlignDetRetinaNet, ContrastiveFCOSHead, ContrastiveRetinaNetHead
from .fcos import AMPSafeFCOS
from .momentum import MomentumPair, cosine_momentum
from .rcnn import AlignDetRCNN, ContrastiveOutputLayers, ContrastiveROIHeads

__all__ = [
    "AMPSafeFCOS",
    "AlignDetFCOS",
    "AlignDetRCNN",
    "AlignDetRetinaNet",
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
    "box_contrastive_loss",
    "cosine_momentum",
]
