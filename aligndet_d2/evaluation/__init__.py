from .class_agnostic import AGNOSTIC_KEY, ClassAgnosticCOCOEvaluator
from .recall import IOU_THRESHOLDS, proposal_recall
from .voc import VOC_KEY, VOCDetectionEvaluator

__all__ = [
    "AGNOSTIC_KEY",
    "ClassAgnosticCOCOEvaluator",
    "VOC_KEY",
    "VOCDetectionEvaluator",
    "IOU_THRESHOLDS",
    "proposal_recall",
]
