from .class_agnostic import AGNOSTIC_KEY, ClassAgnosticCOCOEvaluator
from .frequency import FREQUENCY_KEY, FrequencyCOCOEvaluator, images_per_category
from .recall import IOU_THRESHOLDS, proposal_recall
from .voc import VOC_KEY, VOCDetectionEvaluator

__all__ = [
    "AGNOSTIC_KEY",
    "ClassAgnosticCOCOEvaluator",
    "FREQUENCY_KEY",
    "FrequencyCOCOEvaluator",
    "images_per_category",
    "VOC_KEY",
    "VOCDetectionEvaluator",
    "IOU_THRESHOLDS",
    "proposal_recall",
]
