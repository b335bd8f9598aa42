"""The base-momentum benchmark on a tiny budget: a well-formed report, held-out images, resume."""

import json
import subprocess
import sys

import pytest
from conftest import REPO, tiny_dataset, write_subset_json

from aligndet_d2.modeling.momentum import initial_weight_share


@pytest.mark.timeout(900)
def test_tiny_momentum_probe(tmp_path):
    data = tiny_dataset(tmp_path / "tiny", train=4)
    pretrain = tmp_path / "pretrain.json"
    write_subset_json(str(data / "annotations" / "train.json"), pretrain, 2)
    out = tmp_path / "report"
    cmd = [
        sys.executable,
        str(REPO / "benchmarks" / "momentum.py"),
        "--data",
        str(data),
        "--pretrain-json",
        str(pretrain),
        "--detectors",
        "faster_rcnn",
        "--bases",
        "0.996",
        "0.9",
        "--max-iter",
        "2",
        "--workers",
        "1",
        "--work-dir",
        str(tmp_path / "work"),
        "--out",
        str(out),
    ]
    first = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["holdout_images"] == 2 and report["pretrain_images"] == 2
    rows = report["rows"]
    assert [r["base"] for r in rows] == [0.996, 0.9]
    for r in rows:
        assert r["init_share"] == pytest.approx(initial_weight_share(2, r["base"]))
        p = r["probe"]
        assert p["batches"] == 1
        # A loss between the perfect-embedding floor and the no-information chance level.
        assert p["floor"] < p["online/loss"] < p["chance"] + 1.0
    assert "| faster_rcnn | 0.9 |" in (tmp_path / "report.md").read_text()
    # Resumed: nothing is pre-trained again.
    second = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert second.returncode == 0 and "pre-training with" not in second.stdout


def test_nothing_to_hold_out_is_a_clear_error(tmp_path):
    data = tiny_dataset(tmp_path / "tiny", train=2)
    cmd = [
        sys.executable,
        str(REPO / "benchmarks" / "momentum.py"),
        "--data",
        str(data),
        "--pretrain-json",
        str(data / "annotations" / "train.json"),
        "--work-dir",
        str(tmp_path / "work"),
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "every train image is in" in proc.stderr and "nothing to hold out" in proc.stderr
