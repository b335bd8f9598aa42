import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO, write_subset_json

from aligndet_d2.cli.proposals import main as proposals_main
from aligndet_d2.data.proposals import (
    ProposalFilter,
    ProposalsError,
    ProposalSettings,
    generate_proposals,
)


def _gen(images, json_in, out, **kw):
    kw.setdefault("progress", False)
    return generate_proposals(images, str(out), coco_json=json_in, **kw)


@pytest.fixture(scope="module")
def six(coco64, tmp_path_factory):
    d = tmp_path_factory.mktemp("six")
    write_subset_json(coco64["train"], d / "six.json", 6)
    return coco64["images"], str(d / "six.json"), d


@pytest.fixture(scope="module")
def one_worker_result(six):
    images, js, d = six
    _gen(images, js, d / "w1.json", num_workers=1)
    return (d / "w1.json").read_bytes()


def test_json_schema(six, one_worker_result):
    images, js, d = six
    out = json.loads(one_worker_result)
    src = json.load(open(js))
    assert out["categories"] == [{"id": 1, "name": "selective_search", "supercategory": "proposal"}]
    assert [im["id"] for im in out["images"]] == [im["id"] for im in src["images"]]
    # Attribution fields of the input image entries are kept.
    assert all(im["coco_url"] and "license" in im for im in out["images"])
    assert out["licenses"] == src["licenses"]
    info = out["info"]
    assert info["settings"]["mode"] == "soco" and info["settings"]["filter"]["min_size"] == 32
    assert info["version"] and info["skipped_images"] == []
    assert set(info["fallback_images"]) == {"aspect_ratio", "min_size", "none"}
    ids = [a["id"] for a in out["annotations"]]
    assert ids == list(range(1, len(ids) + 1))
    assert info["num_proposals"] == len(ids) > 6 * 20
    sizes = {im["id"]: (im["width"], im["height"]) for im in out["images"]}
    f = ProposalFilter()
    ranks = {}
    for a in out["annotations"]:
        x, y, w, h = a["bbox"]
        W, H = sizes[a["image_id"]]
        assert 0 <= x and 0 <= y and x + w <= W and y + h <= H
        assert f.passes([[x, y, w, h]], W, H)[0]
        assert a["category_id"] == 1 and a["area"] == w * h and a["iscrowd"] == 0
        assert a["rank"] == ranks.get(a["image_id"], -1) + 1  # file order is rank order
        ranks[a["image_id"]] = a["rank"]


def test_two_workers_byte_identical(six, one_worker_result):
    images, js, d = six
    _gen(images, js, d / "w2.json", num_workers=2)
    assert (d / "w2.json").read_bytes() == one_worker_result


def test_same_image_alone_or_after_others(six, one_worker_result, tmp_path):
    images, js, _ = six
    write_subset_json(js, tmp_path / "last.json", 1, start=5)
    _gen(images, str(tmp_path / "last.json"), tmp_path / "alone.json")
    alone = json.loads((tmp_path / "alone.json").read_text())
    together = json.loads(one_worker_result)
    last_id = alone["images"][0]["id"]
    boxes = lambda d: [a["bbox"] for a in d["annotations"] if a["image_id"] == last_id]  # noqa
    assert boxes(alone) == boxes(together) and len(boxes(alone)) > 0


def test_resume_after_kill_is_identical(coco64, tmp_path):
    js = tmp_path / "twelve.json"
    write_subset_json(coco64["train"], js, 12)
    unbroken = tmp_path / "unbroken.json"
    _gen(coco64["images"], str(js), unbroken, num_workers=1)

    out = tmp_path / "killed.json"
    parts = tmp_path / "killed.json.partial.jsonl"
    cmd = [
        sys.executable,
        str(REPO / "tools" / "proposals.py"),
        "generate",
        "--image-root",
        coco64["images"],
        "--coco-json",
        str(js),
        "--output",
        str(out),
        "--workers",
        "2",
        "--no-progress",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:  # kill once a few images are done, mid-run
        if parts.exists() and parts.read_text().count("\n") >= 4:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    done_before = parts.read_text().count("\n") - 1
    assert 3 <= done_before < 12
    # A kill while a line was being written leaves a torn last line: the resume must drop it.
    with open(parts, "a") as f:
        f.write('{"index": 11, "width": 64')
    summary = _gen(coco64["images"], str(js), out, num_workers=2)
    assert summary["resumed"] and summary["num_images"] == 12
    assert out.read_bytes() == unbroken.read_bytes()
    assert not parts.exists()
    # Re-running a finished command changes nothing.
    again = _gen(coco64["images"], str(js), out)
    assert again["num_images"] == 12 and out.read_bytes() == unbroken.read_bytes()


def test_other_settings_do_not_resume(six, tmp_path):
    images, js, _ = six
    out = tmp_path / "p.json"
    write_subset_json(js, tmp_path / "two.json", 2)
    _gen(images, str(tmp_path / "two.json"), out)
    with pytest.raises(
        ProposalsError, match="made from other images or settings; pass --overwrite"
    ):
        _gen(images, str(tmp_path / "two.json"), out, settings=ProposalSettings(seed=1))
    _gen(images, str(tmp_path / "two.json"), out, settings=ProposalSettings(seed=1), overwrite=True)
    assert json.loads(out.read_text())["info"]["settings"]["seed"] == 1


@pytest.fixture
def folder_with_bad_images(coco64, tmp_path):
    root = tmp_path / "imgs"
    root.mkdir()
    names = sorted(os.listdir(coco64["images"]))[:2]
    for n in names:
        shutil.copy(os.path.join(coco64["images"], n), root / n)
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    return root, names


def test_corrupt_and_missing_images_are_skipped(folder_with_bad_images, tmp_path, capsys):
    root, names = folder_with_bad_images
    js = {
        "images": [
            {"id": i + 1, "file_name": n, "width": 640, "height": 480}
            for i, n in enumerate(names + ["corrupt.jpg", "missing.jpg"])
        ]
    }
    # Use the real sizes for the two good images.
    from PIL import Image

    for im, n in zip(js["images"], names):
        im["width"], im["height"] = Image.open(root / n).size
    (tmp_path / "in.json").write_text(json.dumps(js))
    out = tmp_path / "p.json"
    rc = proposals_main(
        [
            "generate",
            "--image-root",
            str(root),
            "--coco-json",
            str(tmp_path / "in.json"),
            "--output",
            str(out),
            "--no-progress",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "2 images" in printed and "2 skipped" in printed
    assert "skipped corrupt.jpg: cannot decode" in printed
    assert "skipped missing.jpg: missing file" in printed
    skipped = json.loads(out.read_text())["info"]["skipped_images"]
    assert [(s["file_name"], s["reason"].split(":")[0]) for s in skipped] == [
        ("corrupt.jpg", "cannot decode"),
        ("missing.jpg", "missing file"),
    ]


def test_strict_stops_at_corrupt_image_and_keeps_progress(folder_with_bad_images, tmp_path, capsys):
    root, names = folder_with_bad_images
    out = tmp_path / "p.json"
    rc = proposals_main(
        ["generate", "--image-root", str(root), "--output", str(out), "--no-progress", "--strict"]
    )
    assert rc == 1
    err = capsys.readouterr().err
    assert f"{root / 'corrupt.jpg'}: cannot decode" in err and "--strict" in err
    # Folder order is sorted: the two good images (sorted before corrupt.jpg) were finished and
    # kept.
    assert not out.exists()
    parts = (tmp_path / "p.json.partial.jsonl").read_text().splitlines()
    assert len(parts) == 1 + 2


def test_folder_input_gives_sequential_ids(folder_with_bad_images, tmp_path):
    root, names = folder_with_bad_images
    s = generate_proposals(str(root), str(tmp_path / "p.json"), progress=False)
    out = json.loads((tmp_path / "p.json").read_text())
    assert [(im["id"], im["file_name"]) for im in out["images"]] == [(1, names[0]), (2, names[1])]
    assert [sk["file_name"] for sk in s["skipped"]] == ["corrupt.jpg"]
