"""tools/low_data_splits.py: SoftTeacher naming, determinism, nesting, counts and bad input."""

import json
import subprocess
import sys

import pytest
from conftest import REPO

from aligndet_d2.data.splits import SplitError, low_data_split, write_low_data_splits


def _coco(n=100, empty=(3, 7, 11)):
    """n images, ids 1..n; image i has i % 3 + 1 boxes, except the ids in ``empty`` (none) and one
    crowd-only image (id 2)."""
    images = [
        {"id": i, "file_name": f"{i:06d}.jpg", "width": 100, "height": 80} for i in range(1, n + 1)
    ]
    anns = []
    for i in range(1, n + 1):
        if i in empty:
            continue
        for _ in range(1 if i == 2 else i % 3 + 1):
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": 1,
                    "bbox": [1, 2, 30, 20],
                    "area": 600,
                    "iscrowd": int(i == 2),
                }
            )
    return {
        "info": {"description": "hand-made"},
        "images": images,
        "annotations": anns,
        "categories": [{"id": 1, "name": "thing"}],
    }


@pytest.fixture
def coco_json(tmp_path):
    path = tmp_path / "train.json"
    path.write_text(json.dumps(_coco()))
    return path


def test_naming_counts_and_partition(coco_json, tmp_path):
    out = tmp_path / "splits"
    rows = write_low_data_splits(str(coco_json), str(out), [5, 10], [1, 2])
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        f"train.{s}@{p}{suffix}.json"
        for s in (1, 2)
        for p in (5, 10)
        for suffix in ("", "-unlabeled")
    )
    src = _coco()
    for r in rows:
        lab = json.loads((out / f"train.{r['seed']}@{r['percent']:g}.json").read_text())
        unl = json.loads((out / f"train.{r['seed']}@{r['percent']:g}-unlabeled.json").read_text())
        lab_ids = {im["id"] for im in lab["images"]}
        unl_ids = {im["id"] for im in unl["images"]}
        assert len(lab_ids) == round(r["percent"])  # of 100 images
        assert lab_ids.isdisjoint(unl_ids) and lab_ids | unl_ids == set(range(1, 101))
        # Images without (non-crowd) boxes are never labeled; they are counted.
        assert lab_ids.isdisjoint({2, 3, 7, 11})
        assert r["images_without_boxes"] == 4
        assert lab["info"]["low_data_split"]["images_without_boxes"] == 4
        assert lab["info"]["description"] == "hand-made"  # the source info is kept
        # Every annotation goes with its image; categories are kept.
        assert {a["image_id"] for a in lab["annotations"]} == lab_ids
        assert len(lab["annotations"]) + len(unl["annotations"]) == len(src["annotations"])
        assert lab["categories"] == src["categories"]
        assert r["labeled_boxes"] == len(lab["annotations"])


def test_deterministic_nested_and_independent():
    data = _coco()
    a = low_data_split(data, 10, seed=1)
    assert a == low_data_split(data, 10, seed=1)
    # Pinned: the same seed gives these images on any machine (numpy's PCG64 stream is stable).
    assert a["labeled"][:5] == [61, 13, 73, 43, 21]
    assert low_data_split(data, 10, seed=2)["labeled"] != a["labeled"]
    # Nested by default: the 5 % split of a seed is inside its 10 % split.
    five = low_data_split(data, 5, seed=1)
    assert set(five["labeled"]) < set(a["labeled"])
    indep = low_data_split(data, 5, seed=1, nested=False)
    assert len(indep["labeled"]) == 5 and indep["labeled"] != five["labeled"]


def test_bad_percents(coco_json, tmp_path):
    data = _coco()
    with pytest.raises(SplitError, match="rounds to 0 images"):
        low_data_split(data, 0.4, seed=1, source="train.json")
    with pytest.raises(SplitError, match=r"percent must be in \(0, 100\)"):
        low_data_split(data, 100, seed=1)
    with pytest.raises(SplitError, match="only 96 of its 100 images have a box"):
        low_data_split(data, 99, seed=1)
    # A bad percent among good ones writes nothing.
    out = tmp_path / "none"
    with pytest.raises(SplitError, match="rounds to 0"):
        write_low_data_splits(str(coco_json), str(out), [10, 0.1], [1])
    assert not out.exists()


def test_command_line(coco_json, tmp_path):
    tool = [sys.executable, str(REPO / "tools" / "low_data_splits.py")]
    ok = subprocess.run(
        tool
        + [
            "--json",
            str(coco_json),
            "--percents",
            "10",
            "--seeds",
            "3",
            "--output-dir",
            str(tmp_path / "s"),
        ],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    assert "train.3@10.json: 10 labeled images" in ok.stdout
    assert "of them 4 without boxes" in ok.stdout
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    err = subprocess.run(
        tool + ["--json", str(bad), "--percents", "10", "--output-dir", str(tmp_path / "b")],
        capture_output=True,
        text=True,
    )
    assert err.returncode == 1 and "bad.json: cannot read the json" in err.stderr
    err = subprocess.run(
        tool + ["--json", str(coco_json), "--percents", "0.2", "--output-dir", str(tmp_path / "b")],
        capture_output=True,
        text=True,
    )
    assert err.returncode == 1 and "rounds to 0 images" in err.stderr
