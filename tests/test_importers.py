"""VOC XML and YOLO txt labels to COCO json: boxes converted exactly, and every clipped or dropped
box reported with its file and reason."""

import json

import numpy as np
import pytest
from PIL import Image

from aligndet_d2.cli import convert_labels
from aligndet_d2.data.checks import DatasetError, check_coco_dataset
from aligndet_d2.data.importers import read_class_names, voc_to_coco, yolo_to_coco


def _image(path, w=100, h=80):
    Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(path)


def _xml(path, objects):
    rows = "".join(
        f"<object><name>{n}</name><difficult>0</difficult><bndbox><xmin>{b[0]}</xmin>"
        f"<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for n, b in objects
    )
    path.write_text(f"<annotation><filename>{path.stem}.jpg</filename>{rows}</annotation>")


def test_voc_boxes_clipped_dropped_and_converted(tmp_path):
    images, labels = tmp_path / "images", tmp_path / "Annotations"
    images.mkdir(), labels.mkdir()
    for stem in ("a", "b", "c"):
        _image(images / f"{stem}.jpg")
    _xml(labels / "a.xml", [("cat", (11, 21, 40, 60)), ("dog", (90, 70, 120, 90))])
    _xml(
        labels / "b.xml",
        [("cat", (30, 30, 30, 50)), ("bird", (1, 1, 10, 10)), ("dog", (30, 5, 20, 9))],
    )
    _xml(labels / "lost.xml", [("cat", (1, 1, 5, 5))])  # no image
    coco, changes = voc_to_coco(str(labels), str(images), classes=["cat", "dog"])
    assert [c["name"] for c in coco["categories"]] == ["cat", "dog"]
    assert len(coco["images"]) == 3  # c.jpg has no xml: a background image
    boxes = [(a["category_id"], a["bbox"]) for a in coco["annotations"]]
    # 1-based inclusive [11, 21, 40, 60] -> x 10, y 20, w 30, h 40; the dog clipped to 100x80;
    # [30, 30, 30, 50] is one pixel wide.
    assert boxes == [
        (1, [10.0, 20.0, 30.0, 40.0]),
        (2, [89.0, 69.0, 11.0, 11.0]),
        (1, [29.0, 29.0, 1.0, 21.0]),
    ]
    got = {(c.file, c.action, c.reason) for c in changes}
    assert got == {
        ("a.xml", "clipped", "outside the image"),
        ("b.xml", "dropped", "unknown class"),
        ("b.xml", "dropped", "zero or negative width or height"),
        ("lost.xml", "dropped", "no image of this name"),
    }
    path = tmp_path / "out.json"
    path.write_text(json.dumps(coco))
    check_coco_dataset(str(path), str(images))  # what it writes passes the training checks


def test_yolo_lines_clipped_dropped_and_converted(tmp_path):
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir(), labels.mkdir()
    _image(images / "a.jpg", 100, 80)
    _image(images / "bg.png", 50, 50)
    (labels / "classes.txt").write_text("cell\nplatelet\n")
    (labels / "a.txt").write_text(
        "0 0.5 0.5 0.2 0.25\n"  # x 40..60, y 30..50
        "1 0.95 0.5 0.2 0.5\n"  # x 85..105 -> clipped to 100
        "2 0.5 0.5 0.1 0.1\n"  # unknown class
        "0 0.5 0.5\n"  # malformed
        "1 0.5 0.5 0 0.3\n"  # zero width
    )
    classes = read_class_names(str(labels / "classes.txt"))
    coco, changes = yolo_to_coco(str(labels), str(images), classes)
    boxes = [(a["category_id"], a["bbox"]) for a in coco["annotations"]]
    assert boxes == [(1, [40.0, 30.0, 20.0, 20.0]), (2, [85.0, 20.0, 15.0, 40.0])]
    assert [c.reason for c in changes] == [
        "outside the image",
        "unknown class",
        "not 'class cx cy w h'",
        "zero or negative width or height",
    ]
    assert [c.action for c in changes] == ["clipped", "dropped", "dropped", "dropped"]
    assert {im["file_name"] for im in coco["images"]} == {"a.jpg", "bg.png"}
    with pytest.raises(DatasetError, match="give the class names"):
        yolo_to_coco(str(labels), str(images), [])


def test_the_command_line_writes_the_json_and_prints_the_table(tmp_path, capsys):
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir(), labels.mkdir()
    _image(images / "a.jpg")
    (labels / "a.txt").write_text("0 0.5 0.5 0.2 0.25\n1 1.0 1.0 0.4 0.4\n")
    out = tmp_path / "train.json"
    argv = ["--format", "yolo", "--labels", str(labels), "--images", str(images)]
    assert convert_labels.main([*argv, "--classes", "cell,platelet", "--output", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| clipped | outside the image | 1 |" in text
    assert f"{out}: 1 images (1 with boxes), 2 boxes, 2 classes (cell, platelet)" in text
    assert len(json.loads(out.read_text())["annotations"]) == 2
    assert convert_labels.main([*argv, "--output", str(out)]) == 1  # no class names
    assert "give the class names" in capsys.readouterr().err
