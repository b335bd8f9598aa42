"""Models of box-domain pre-training: the momentum pair, the contrastive loss and per-detector heads."""
from .backbones import FREEZE_ALL, EfficientNetLite, FrozenResNet
from .contrastive import BACKGROUND_ID, ProjectionMLP, box_contrastive_loss
from .momentum import MomentumPair, cosine_momentum
from .rcnn import AlignDetRCNN, ContrastiveOutputLayers, ContrastiveROIHeads

__all__ = [
    "AlignDetRCNN",
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
