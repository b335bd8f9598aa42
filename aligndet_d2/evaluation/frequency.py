"""COCO box AP split by how often each class occurs in the *training* set (LVIS's APr / APc / APf).

Proper Reuse (CVPR 2022) finds that a frozen ImageNet backbone helps most on classes with few
annotations. This evaluator makes that visible on any COCO-format dataset: each class is binned by
the number of training images that contain it (LVIS's bins: 1-10 rare, 11-100 common, more than 100
frequent; the edges are parameters) and the per-class AP of the test set is averaged per bin.
"""

from __future__ import annotations

import bisect
import json
import os
from collections import defaultdict
from typing import Dict, List, Optional, Sequence

import numpy as np
from detectron2.evaluation import COCOEvaluator
from detectron2.utils.file_io import PathManager
from tabulate import tabulate

__all__ = ["FREQUENCY_KEY", "FrequencyCOCOEvaluator", "images_per_category"]

# Key of the results in the evaluator's output (beside COCOEvaluator's "bbox").
FREQUENCY_KEY = "bbox_by_frequency"


def images_per_category(train_json: str) -> Dict[str, int]:
    """Number of images of a COCO-format json that contain each category (crowd boxes ignored).

    Returns:
        {category name: image count} for every category the json declares, 0 where none occurs.
    """
    with PathManager.open(train_json) as f:
        data = json.load(f)
    if not isinstance(data, dict) or "categories" not in data or "annotations" not in data:
        raise ValueError(f"{train_json}: not a COCO detection json (no categories / annotations)")
    names = {c["id"]: c["name"] for c in data["categories"]}
    if len(set(names.values())) != len(names):
        raise ValueError(f"{train_json}: two categories share a name")
    images = defaultdict(set)
    for a in data["annotations"]:
        if not a.get("iscrowd", 0):
            images[a["category_id"]].add(a["image_id"])
    return {name: len(images.get(cid, ())) for cid, name in names.items()}


class FrequencyCOCOEvaluator(COCOEvaluator):
    """COCO box AP and AP50 averaged over the classes of each training-frequency bin.

    Returns ``{"bbox_by_frequency": {"AP_<bin>", "AP50_<bin>", "classes_<bin>" for each bin}}``, so
    it runs beside Detectron2's ``COCOEvaluator`` and ``PascalVOCDetectionEvaluator`` in one
    ``DatasetEvaluators``. A bin's AP is the mean AP of its classes that have ground truth in the
    test set (NaN if none has). Classes no training image contains go to the first bin. The bins and
    their classes are logged, kept in ``self.bins`` and, with ``output_dir``, written with every
    class's AP and training count to ``<output_dir>/ap_by_frequency.json``.
    """

    def __init__(
        self,
        dataset_name: str,
        *,
        train_json: str,
        edges: Sequence[int] = (10, 100),
        names: Sequence[str] = ("rare", "common", "frequent"),
        max_dets_per_image: Optional[int] = None,
        distributed: bool = True,
        output_dir: Optional[str] = None,
    ):
        """
        Args:
            dataset_name: a registered dataset with COCO-format ground truth (the test set).
            train_json: the COCO json the detector was trained on; it must declare the test set's
                categories (matched by name).
            edges: upper bin edges, inclusive and increasing: a class in ``c`` training images is
                in the first bin whose edge is >= ``c``, else in the last bin.
            names: ``len(edges) + 1`` bin names.
            max_dets_per_image: detections kept per image (COCO's 100 by default).
            distributed: gather predictions from all processes.
            output_dir: where ``ap_by_frequency.json`` goes (predictions are not dumped).
        """
        edges, names = [int(e) for e in edges], [str(n) for n in names]
        if not edges or any(b <= a for a, b in zip(edges, edges[1:])) or edges[0] < 0:
            raise ValueError(f"edges {edges} must be non-negative and strictly increasing")
        if len(names) != len(edges) + 1 or len(set(names)) != len(names):
            raise ValueError(f"{len(edges)} edges need {len(edges) + 1} distinct names: {names}")
        super().__init__(
            dataset_name,
            tasks=("bbox",),
            distributed=distributed,
            output_dir=None,
            max_dets_per_image=max_dets_per_image,
            use_fast_impl=False,
        )
        self._freq_dir = output_dir
        self._edges, self._names = edges, names
        test_cats = {c["id"]: c["name"] for c in self._coco_api.dataset["categories"]}
        # Matched by name: Detectron2's COCO conversion of a VOC split numbers classes from 0.
        self.counts = images_per_category(train_json)
        if set(self.counts) != set(test_cats.values()):
            raise ValueError(
                f"{train_json}: its categories differ from those of the test set "
                f"{dataset_name!r} ({self._metadata.json_file}): only in the train json "
                f"{sorted(set(self.counts) - set(test_cats.values()))[:10]}, only in the test set "
                f"{sorted(set(test_cats.values()) - set(self.counts))[:10]}"
            )
        self.bins: Dict[str, List[str]] = {n: [] for n in names}
        self._bin_of = {}
        for cid in sorted(test_cats):
            b = names[bisect.bisect_left(edges, self.counts[test_cats[cid]])]  # first edge >= count
            self._bin_of[cid] = b
            self.bins[b].append(test_cats[cid])
        self._cat_names = test_cats
        self._by_frequency = {}

    def _derive_coco_results(self, coco_eval, iou_type, class_names=None):
        results = super()._derive_coco_results(coco_eval, iou_type, class_names)
        per_class = {}
        if coco_eval is not None:
            # precision: (IoU thresholds, recall points, classes, area ranges, max dets); classes
            # in the order of params.catIds.
            precision = coco_eval.eval["precision"][:, :, :, 0, -1]
            for k, cid in enumerate(coco_eval.params.catIds):
                p, p50 = precision[:, :, k], precision[0, :, k]
                per_class[cid] = (
                    float(np.mean(p[p > -1]) * 100) if (p > -1).any() else float("nan"),
                    float(np.mean(p50[p50 > -1]) * 100) if (p50 > -1).any() else float("nan"),
                )
        out = {}
        for b, classes in self.bins.items():
            cids = [c for c in self._bin_of if self._bin_of[c] == b]
            aps = [per_class[c] for c in cids if c in per_class and np.isfinite(per_class[c][0])]
            out[f"AP_{b}"] = float(np.mean([a for a, _ in aps])) if aps else float("nan")
            out[f"AP50_{b}"] = float(np.mean([a for _, a in aps])) if aps else float("nan")
            out[f"classes_{b}"] = float(len(classes))
        bounds = [0] + [e + 1 for e in self._edges]
        rows = [
            [
                b,
                f"{lo}-{hi}" if hi is not None else f">{lo - 1}",
                len(self.bins[b]),
                out[f"AP_{b}"],
                out[f"AP50_{b}"],
                ", ".join(self.bins[b]),
            ]
            for b, lo, hi in zip(self._names, bounds, self._edges + [None])
        ]
        self._logger.info(
            "Box AP by training-image frequency of the class:\n"
            + tabulate(
                rows,
                headers=["bin", "train images", "classes", "AP", "AP50", "which"],
                tablefmt="pipe",
                floatfmt=".2f",
            )
        )
        if self._freq_dir:
            PathManager.mkdirs(self._freq_dir)
            table = {
                self._cat_names[c]: {
                    "train_images": self.counts[self._cat_names[c]],
                    "bin": self._bin_of[c],
                    "AP": per_class.get(c, (float("nan"),) * 2)[0],
                    "AP50": per_class.get(c, (float("nan"),) * 2)[1],
                }
                for c in self._bin_of
            }
            path = os.path.join(self._freq_dir, "ap_by_frequency.json")
            with PathManager.open(path, "w") as f:
                json.dump({"bins": out, "classes": table, "edges": self._edges}, f, indent=1)
        self._by_frequency = out
        return results

    def evaluate(self, img_ids=None):
        self._by_frequency = {}
        results = super().evaluate(img_ids)
        if results is None:  # not the main process
            return None
        if not self._by_frequency:  # no predictions at all: COCOEvaluator derived nothing
            self._derive_coco_results(None, "bbox")
        return {FREQUENCY_KEY: dict(self._by_frequency)}
