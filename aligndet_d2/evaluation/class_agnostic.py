"""Class-agnostic COCO box AP: detections and ground truth relabelled to one class.

It measures how well a detector finds objects, whatever their class: the part of detection that
label-free pre-training can teach, and a less noisy number than 80-class AP on small validation
sets.
"""

from __future__ import annotations

import contextlib
import copy
import io
import itertools
from collections import defaultdict

from detectron2.evaluation import COCOEvaluator
from detectron2.evaluation.coco_evaluation import _evaluate_predictions_on_coco
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

__all__ = ["ClassAgnosticCOCOEvaluator", "AGNOSTIC_KEY"]

# Key of the results in the evaluator's output (beside COCOEvaluator's "bbox").
AGNOSTIC_KEY = "bbox_agnostic"


class ClassAgnosticCOCOEvaluator(COCOEvaluator):
    """COCO box AP with every class merged into one (top ``max_dets_per_image`` boxes per image).

    Returns ``{"bbox_agnostic": {"AP", "AP50", "AP75", "APs", "APm", "APl", ...}}``. Crowd regions
    stay crowd regions.
    """

    def __init__(
        self,
        dataset_name: str,
        *,
        max_dets_per_image: int = 100,
        distributed: bool = True,
        output_dir: str = None,
    ):
        """
        Args:
            dataset_name: a registered dataset with COCO-format ground truth.
            max_dets_per_image: detections kept per image, highest scores first.
            distributed: gather predictions from all processes.
            output_dir: unused (the 80-class evaluator writes the predictions).
        """
        super().__init__(
            dataset_name,
            tasks=("bbox",),
            distributed=distributed,
            output_dir=None,
            max_dets_per_image=max_dets_per_image,
            use_fast_impl=False,
        )
        self._max_dets = max_dets_per_image
        ds = copy.deepcopy(self._coco_api.dataset)
        for a in ds.get("annotations", []):
            a["category_id"] = 1
        ds["categories"] = [{"id": 1, "name": "object", "supercategory": "object"}]
        with contextlib.redirect_stdout(io.StringIO()):
            self._agnostic_api = COCO()
            self._agnostic_api.dataset = ds
            self._agnostic_api.createIndex()

    def _eval_predictions(self, predictions, img_ids=None):
        per_image = defaultdict(list)
        for r in itertools.chain(*[x["instances"] for x in predictions]):
            per_image[r["image_id"]].append(dict(r, category_id=1))
        results = []
        for dets in per_image.values():
            dets.sort(key=lambda r: -r["score"])
            results.extend(dets[: self._max_dets])
        coco_eval = (
            _evaluate_predictions_on_coco(
                self._agnostic_api,
                results,
                "bbox",
                cocoeval_fn=COCOeval,
                img_ids=img_ids,
                max_dets_per_image=self._max_dets_per_image,
            )
            if results
            else None
        )
        self._results[AGNOSTIC_KEY] = self._derive_coco_results(
            coco_eval, "bbox", class_names=["object"]
        )
