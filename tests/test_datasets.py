import json
import logging

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from aligndet_d2.data import (
    ProposalsError,
    load_proposals_json,
    register_coco_as_proposals,
    register_proposals,
)


def _proposals(coco64, n=3):
    src = json.load(open(coco64["train"]))
    ims = src["images"][:n]
    anns = []
    for im in ims:
        for r, box in enumerate([[10, 20, 100, 80], [50, 60, 64, 64]]):
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": im["id"],
                    "category_id": 1,
                    "bbox": box,
                    "area": box[2] * box[3],
                    "iscrowd": 0,
                    "rank": r,
                }
            )
    return {
        "info": {},
        "images": ims,
        "annotations": anns,
        "categories": [{"id": 1, "name": "selective_search"}],
    }


def _write(tmp_path, data, name="p.json"):
    p = tmp_path / name
    p.write_text(json.dumps(data))
    return str(p)


def test_register_and_load(coco64, tmp_path):
    p = _write(tmp_path, _proposals(coco64))
    register_proposals("test_props_ok", p, coco64["images"])
    dicts = DatasetCatalog.get("test_props_ok")
    assert len(dicts) == 3
    d = dicts[0]
    assert d["file_name"].startswith(coco64["images"]) and d["width"] and d["height"]
    assert [a["bbox"] for a in d["annotations"]] == [[10, 20, 100, 80], [50, 60, 64, 64]]
    meta = MetadataCatalog.get("test_props_ok")
    assert meta.is_proposals and meta.thing_classes == ["selective_search"]


def test_images_not_under_root(coco64, tmp_path):
    p = _write(tmp_path, _proposals(coco64))
    with pytest.raises(ProposalsError) as e:
        load_proposals_json(p, str(tmp_path))
    msg = str(e.value)
    assert p in msg and "3 of 3 images are not under the image root" in msg
    assert "is this proposals file for other images?" in msg


def test_box_outside_image(coco64, tmp_path):
    data = _proposals(coco64)
    im = data["images"][1]
    data["annotations"][3]["bbox"] = [im["width"] - 10, 0, 50, 50]
    p = _write(tmp_path, data)
    with pytest.raises(ProposalsError) as e:
        load_proposals_json(p, coco64["images"])
    msg = str(e.value)
    assert p in msg and im["file_name"] in msg and f"[{im['width'] - 10}, 0, 50, 50]" in msg
    assert "outside the" in msg


def test_degenerate_box(coco64, tmp_path):
    data = _proposals(coco64)
    data["annotations"][0]["bbox"] = [5, 5, 0, 10]
    with pytest.raises(ProposalsError, match="degenerate box"):
        load_proposals_json(_write(tmp_path, data), coco64["images"])


def test_images_without_proposals_are_skipped_with_a_count(coco64, tmp_path, caplog):
    data = _proposals(coco64, n=3)
    gone = data["images"][0]["id"]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != gone]
    with caplog.at_level(logging.WARNING):
        dicts = load_proposals_json(_write(tmp_path, data), coco64["images"])
    assert len(dicts) == 2
    assert "skipped 1 of 3 images that have no proposals" in caplog.text


def test_labelled_dataset_gives_its_boxes_with_a_warning(coco64, caplog):
    register_coco_as_proposals("test_gt_as_props", coco64["train"], coco64["images"])
    with caplog.at_level(logging.WARNING):
        dicts = DatasetCatalog.get("test_gt_as_props")
    assert "class labels are ignored and its boxes are used as proposals" in caplog.text
    assert all(a["category_id"] == 0 for d in dicts for a in d["annotations"])
    src = json.load(open(coco64["train"]))
    with_boxes = {a["image_id"] for a in src["annotations"]}
    assert [d["image_id"] for d in dicts] == [
        im["id"] for im in src["images"] if im["id"] in with_boxes
    ]
    assert len(dicts) == 31  # one train image has no labelled box
