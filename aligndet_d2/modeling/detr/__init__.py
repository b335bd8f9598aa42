"""DETR in Detectron2 (no dependency on the registry's ``detr`` package)."""

from .criterion import SetCriterion
from .detr import DETR, MLP
from .matcher import HungarianMatcher
from .position_encoding import PositionEmbeddingSine
from .pretrain import AlignDetDETR
from .transformer import DETRTransformer

__all__ = [
    "AlignDetDETR",
    "DETR",
    "DETRTransformer",
    "HungarianMatcher",
    "MLP",
    "PositionEmbeddingSine",
    "SetCriterion",
]
