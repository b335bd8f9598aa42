from .class_agnostic import AGNOSTIC_KEY, ClassAgnosticCOCOEvaluator

__all__ = ["AGNOSTIC_KEY", "ClassAgnosticCOCOEvaluator"]
