import copy
import json
import shutil

import pytest
from conftest import write_subset_json

from aligndet_d2.cli.proposals import main as proposals_main
from aligndet_d2.data.proposals import ProposalsError, check_proposals, generate_proposals


@pytest.fixture(scope="module")
def good(coco64, tmp_path_factory):
    d = tmp_path_factory.mktemp("check")
    write_subset_json(coco64["train"], d / "two.json", 2)
    generate_proposals(
        coco64["images"], str(d / "p.json"), coco_json=str(d / "two.json"), progress=False
    )
    return coco64["images"], json.loads((d / "p.json").read_text())


def _write(tmp_path, data):
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(data))
    return str(p)


def test_valid_file_passes(good, tmp_path, capsys):
    images, data = good
    p = _write(tmp_path, data)
    assert check_proposals(p, images) == {
        "num_images": 2,
        "num_proposals": len(data["annotations"]),
    }
    assert proposals_main(["check", "--proposals", p, "--image-root", images]) == 0
    assert "OK (2 images" in capsys.readouterr().out


def _break_box(data, bbox):
    data["annotations"][0]["bbox"] = bbox
    im = data["images"][0]
    return f"image {im['file_name']}, annotation {data['annotations'][0]['id']}, box"


@pytest.mark.parametrize(
    "case, message",
    [
        ("outside", "outside the"),
        ("degenerate", "degenerate box"),
        ("fails_filter", "fails the filter"),
        ("dup_image_id", "appears twice"),
        ("dup_ann_id", "annotation id 1 appears twice"),
        ("unknown_image", "which is not in 'images'"),
        ("missing_image", "is not under the image root"),
        ("wrong_size", "the json says"),
    ],
)
def test_each_bad_case_is_named(good, tmp_path, case, message):
    images, data = good
    data = copy.deepcopy(data)
    im = data["images"][0]
    where = ""
    if case == "outside":
        where = _break_box(data, [im["width"] - 40, 0, 64, 64])
    elif case == "degenerate":
        where = _break_box(data, [10, 10, 0, 40])
    elif case == "fails_filter":
        where = _break_box(data, [0, 0, 20, 20])
    elif case == "dup_image_id":
        data["images"][1]["id"] = im["id"]
    elif case == "dup_ann_id":
        data["annotations"][1]["id"] = 1
    elif case == "unknown_image":
        data["annotations"][0]["image_id"] = 999999
    elif case == "missing_image":
        im["file_name"] = "elsewhere/" + im["file_name"]
        where = im["file_name"]
    elif case == "wrong_size":
        im["width"] += 10
        where = im["file_name"]
    p = _write(tmp_path, data)
    with pytest.raises(ProposalsError) as e:
        check_proposals(p, images)
    msg = str(e.value)
    assert p in msg and message in msg and where in msg


def test_corrupt_image_is_named(good, tmp_path):
    images, data = good
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(f"{images}/{data['images'][1]['file_name']}", root)
    (root / data["images"][0]["file_name"]).write_bytes(b"not an image")
    with pytest.raises(
        ProposalsError, match=f"image {data['images'][0]['file_name']} does not decode"
    ):
        check_proposals(_write(tmp_path, data), str(root))


def test_cli_check_fails_with_message(good, tmp_path, capsys):
    images, data = good
    data = copy.deepcopy(data)
    _break_box(data, [-5, 0, 64, 64])
    rc = proposals_main(["check", "--proposals", _write(tmp_path, data), "--image-root", images])
    assert rc == 1 and "outside the" in capsys.readouterr().err
