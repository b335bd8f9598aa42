"""AP by training-image frequency of the class, on hand-made COCO jsons with known per-class AP."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.evaluation import COCOEvaluator, DatasetEvaluators
from detectron2.structures import Boxes, Instances

from aligndet_d2.data import register_coco
from aligndet_d2.evaluation import FREQUENCY_KEY, FrequencyCOCOEvaluator, images_per_category

CATS = [{"id": 1, "name": "owl"}, {"id": 2, "name": "yak"}, {"id": 5, "name": "cat"}]
# Training images containing each class: owl rare (2), yak common (20), cat frequent (150).
TRAIN_COUNTS = {1: 2, 2: 20, 5: 150}


def _write(path, data):
    path.write_text(json.dumps(data))
    return str(path)


def _train_json(tmp_path, cats=CATS, shift=0, counts=TRAIN_COUNTS):
    images, anns = [], []
    for cid, n in counts.items():
        for _ in range(n):
            iid = len(images) + 1
            images.append({"id": iid, "file_name": f"{iid}.jpg", "width": 64, "height": 64})
            # Two boxes of a class in one image count once; a crowd box does not count.
            for box in ([0, 0, 10, 10], [20, 20, 10, 10]):
                anns.append(
                    {"image_id": iid, "category_id": cid + shift, "bbox": box, "iscrowd": 0}
                )
    anns.append({"image_id": 1, "category_id": 2 + shift, "bbox": [0, 0, 5, 5], "iscrowd": 1})
    for k, a in enumerate(anns):
        a.update(id=k + 1, area=100)
    return _write(
        tmp_path / "train.json", {"images": images, "annotations": anns, "categories": cats}
    )


def _test_set(tmp_path, name):
    # Image 1: one owl and one yak; image 2: two cats. Boxes XYWH.
    gt = [
        (1, 1, [4, 4, 20, 20]),
        (1, 2, [30, 30, 20, 20]),
        (2, 5, [2, 2, 20, 20]),
        (2, 5, [36, 36, 20, 20]),
    ]
    data = {
        "images": [{"id": i, "file_name": f"{i}.jpg", "width": 64, "height": 64} for i in (1, 2)],
        "annotations": [
            {"id": k + 1, "image_id": i, "category_id": c, "bbox": b, "area": 400, "iscrowd": 0}
            for k, (i, c, b) in enumerate(gt)
        ],
        "categories": CATS,
    }
    name = register_coco(name, _write(tmp_path / f"{name}.json", data), str(tmp_path))
    DatasetCatalog.get(name)  # as the test loader does: sets the contiguous class ids
    return name


# Contiguous ids follow the sorted category ids: owl 0, yak 1, cat 2. The owl is found exactly, the
# yak not at all, one cat of two exactly: AP owl 100, yak 0, cat 51 / 101 recall points.
EXACT = {1: [([4, 4, 24, 24], 0, 0.9)], 2: [([2, 2, 22, 22], 2, 0.8)]}


def _predict(evaluator, preds=EXACT):
    """Runs ``evaluator`` on ``{image_id: [(XYXY box, contiguous class, score)]}``."""
    evaluator.reset()
    for image_id, dets in preds.items():
        inst = Instances((64, 64))
        inst.pred_boxes = Boxes(torch.tensor([d[0] for d in dets], dtype=torch.float32))
        inst.pred_classes = torch.tensor([d[1] for d in dets])
        inst.scores = torch.tensor([d[2] for d in dets])
        evaluator.process([{"image_id": image_id}], [{"instances": inst}])
    return evaluator.evaluate()


def test_images_per_category_counts_images_not_boxes(tmp_path):
    assert images_per_category(_train_json(tmp_path)) == {"owl": 2, "yak": 20, "cat": 150}


def test_ap_by_frequency_by_construction(tmp_path):
    name = _test_set(tmp_path, "freq_test")
    ev = FrequencyCOCOEvaluator(
        name, train_json=_train_json(tmp_path), distributed=False, output_dir=str(tmp_path / "out")
    )
    assert ev.bins == {"rare": ["owl"], "common": ["yak"], "frequent": ["cat"]}
    res = _predict(ev)[FREQUENCY_KEY]
    assert res["AP_rare"] == pytest.approx(100.0)
    assert res["AP_common"] == pytest.approx(0.0)
    assert res["AP_frequent"] == pytest.approx(100 * 51 / 101)
    assert res["AP50_frequent"] == pytest.approx(100 * 51 / 101)
    assert res["classes_rare"] == 1.0
    dump = json.loads((tmp_path / "out" / "ap_by_frequency.json").read_text())
    assert dump["classes"]["cat"] == {
        "train_images": 150, "bin": "frequent", "AP": pytest.approx(100 * 51 / 101),
        "AP50": pytest.approx(100 * 51 / 101),
    }  # fmt: skip

    # Other edges: owl (2 images) moves to the middle bin, whose AP is the mean of owl and yak.
    ev = FrequencyCOCOEvaluator(
        name, train_json=_train_json(tmp_path), edges=(1, 100), distributed=False
    )
    res = _predict(ev)[FREQUENCY_KEY]
    assert ev.bins["rare"] == [] and res["AP_rare"] != res["AP_rare"]  # NaN: no class
    assert res["AP_common"] == pytest.approx(50.0)


def test_runs_beside_detectron2_coco_evaluator(tmp_path):
    name = _test_set(tmp_path, "freq_test_beside")
    both = DatasetEvaluators(
        [
            COCOEvaluator(name, tasks=("bbox",), distributed=False),
            FrequencyCOCOEvaluator(name, train_json=_train_json(tmp_path), distributed=False),
        ]
    )
    res = _predict(both)
    # Detectron2's per-class APs agree with the bins.
    assert res["bbox"]["AP-owl"] == pytest.approx(res[FREQUENCY_KEY]["AP_rare"])
    assert res["bbox"]["AP-cat"] == pytest.approx(res[FREQUENCY_KEY]["AP_frequent"])


def test_train_json_with_other_categories_is_a_clear_error(tmp_path):
    name = _test_set(tmp_path, "freq_test_cats")
    other = _train_json(tmp_path, cats=CATS[:2] + [{"id": 5, "name": "dog"}])
    with pytest.raises(ValueError, match=r"train\.json: its categories differ.*'dog'.*'cat'"):
        FrequencyCOCOEvaluator(name, train_json=other, distributed=False)
    # Other ids, same names (Detectron2's COCO conversion of VOC numbers classes from 0): fine.
    renumbered = _train_json(tmp_path, cats=[dict(c, id=c["id"] + 10) for c in CATS], shift=10)
    ev = FrequencyCOCOEvaluator(name, train_json=renumbered, distributed=False)
    assert ev.bins == {"rare": ["owl"], "common": ["yak"], "frequent": ["cat"]}
    with pytest.raises(ValueError, match="3 edges need 4 distinct names"):
        FrequencyCOCOEvaluator(name, train_json=other, edges=(1, 2, 3), distributed=False)
    with pytest.raises(ValueError, match=r"edges \[100, 10\] must be non-negative and strictly"):
        FrequencyCOCOEvaluator(name, train_json=other, edges=(100, 10), distributed=False)
    twins = _train_json(tmp_path, cats=[dict(c, name="owl") for c in CATS])
    with pytest.raises(ValueError, match="train.json: two categories share a name"):
        images_per_category(twins)
    with pytest.raises(ValueError, match="not a COCO detection json"):
        images_per_category(_write(tmp_path / "x.json", {"images": []}))


# Classes in exactly 0, 10, 11, 100 and 101 training images: either side of each bin edge.
EDGE_COUNTS = {3: 0, 7: 10, 8: 11, 20: 100, 21: 101}


def _edge_evaluator(tmp_path, name):
    cats = [{"id": cid, "name": f"c{n}"} for cid, n in EDGE_COUNTS.items()]
    test = {
        "images": [{"id": 1, "file_name": "1.jpg", "width": 64, "height": 64}],
        "annotations": [],
        "categories": cats,
    }
    name = register_coco(name, _write(tmp_path / f"{name}.json", test), str(tmp_path))
    train = _train_json(tmp_path, cats=cats, counts=EDGE_COUNTS)
    return FrequencyCOCOEvaluator(name, train_json=train, distributed=False)


def test_bin_edges_are_inclusive_upper_bounds(tmp_path):
    """LVIS's bins: 0-10 training images rare, 11-100 common, more than 100 frequent."""
    ev = _edge_evaluator(tmp_path, "freq_edges")
    assert ev.counts == {"c0": 0, "c10": 10, "c11": 11, "c100": 100, "c101": 101}
    assert ev.bins == {"rare": ["c0", "c10"], "common": ["c11", "c100"], "frequent": ["c101"]}


def _fake_coco_eval(cat_ids, no_gt=()):
    """A stand-in for a run COCOeval whose ``precision[T, R, K, A, M]`` differs at every index.

    At area "all" (A = 0) and the most detections (M = -1), class k's precision at IoU index t is
    ``0.1 (k + 1) + 0.02 t`` at the first 51 of 101 recall points and 0 at the others (recall not
    reached); every other area range or max-dets slice holds other numbers. Classes in ``no_gt``
    have no ground truth: -1 everywhere, as COCOeval writes.
    """
    shape = (10, 101, len(cat_ids), 4, 3)
    a, m = np.meshgrid(np.arange(4), np.arange(3), indexing="ij")
    precision = np.broadcast_to(0.55 + 0.1 * a + 0.03 * m, shape).copy()
    t = np.arange(10)[:, None]
    for k, cid in enumerate(cat_ids):
        curve = np.zeros((10, 101))
        curve[:, :51] = 0.1 * (k + 1) + 0.02 * t
        precision[:, :, k, 0, -1] = -1.0 if cid in no_gt else curve
    return SimpleNamespace(
        eval={"precision": precision},
        params=SimpleNamespace(catIds=list(cat_ids)),
        stats=[0.5] * 12,
    )


def test_ap50_reads_iou_0_5_at_all_areas_and_most_detections(tmp_path):
    ev = _edge_evaluator(tmp_path, "freq_fake_eval")
    # c0 (no training image) has no ground truth in the test set either: it counts in its bin's
    # classes, not in its AP.
    ev._derive_coco_results(_fake_coco_eval(sorted(EDGE_COUNTS), no_gt={3}), "bbox")
    res = ev._by_frequency
    # Class k: AP = mean over 10 IoUs and 101 recall points = (0.1 (k + 1) + 0.02 * 4.5) * 51 / 101;
    # AP50 = the IoU-0.5 row only = 0.1 (k + 1) * 51 / 101 (x100).
    r = 100 * 51 / 101
    expected = {
        "AP_rare": (0.2 + 0.09) * r,  # c10 (k = 1) alone
        "AP50_rare": 0.2 * r,
        "AP_common": (0.35 + 0.09) * r,  # c11 and c100 (k = 2, 3): mean of 0.3 and 0.4
        "AP50_common": 0.35 * r,
        "AP_frequent": (0.5 + 0.09) * r,  # c101 (k = 4)
        "AP50_frequent": 0.5 * r,
        "classes_rare": 2.0,
        "classes_common": 2.0,
        "classes_frequent": 1.0,
    }
    assert res == pytest.approx(expected, rel=1e-9)


def test_ap50_and_ap_differ_for_a_loose_box(tmp_path):
    """A real COCOeval: the owl's box overlaps its ground truth with IoU 0.54, matched at IoU 0.5
    only: AP50 100, AP 10 (1 of COCO's 10 thresholds)."""
    name = _test_set(tmp_path, "freq_test_loose")
    ev = FrequencyCOCOEvaluator(name, train_json=_train_json(tmp_path), distributed=False)
    # Ground truth XYXY (4, 4, 24, 24); shifted by 6: IoU = 14 * 20 / (800 - 280) = 0.538.
    res = _predict(ev, {1: [([10, 4, 30, 24], 0, 0.9)], 2: EXACT[2]})[FREQUENCY_KEY]
    assert res["AP50_rare"] == pytest.approx(100.0)
    assert res["AP_rare"] == pytest.approx(10.0)
    assert res["AP_frequent"] == res["AP50_frequent"] == pytest.approx(100 * 51 / 101)
