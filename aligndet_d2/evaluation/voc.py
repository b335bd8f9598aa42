"""Pascal VOC AP beside the COCO evaluators (their results share Detectron2's ``"bbox"`` key)."""

from __future__ import annotations

from detectron2.evaluation import PascalVOCDetectionEvaluator

__all__ = ["VOCDetectionEvaluator", "VOC_KEY"]

# Key of the results in the evaluator's output (beside COCOEvaluator's "bbox").
VOC_KEY = "bbox_voc"


class VOCDetectionEvaluator(PascalVOCDetectionEvaluator):
    """Detectron2's ``PascalVOCDetectionEvaluator`` (VOC 2007's 11-point AP for a 2007 split,
    ``difficult`` boxes ignored; AP50, AP75 and AP averaged over IoU 0.5:0.95) under the key
    ``"bbox_voc"``, so that it can run in one ``DatasetEvaluators`` with ``COCOEvaluator``.

    Args:
        dataset_name: a dataset registered by :func:`aligndet_d2.data.voc.register_voc` or
            Detectron2's ``register_pascal_voc``.
    """

    def evaluate(self):
        res = super().evaluate()
        return None if res is None else {VOC_KEY: res["bbox"]}
