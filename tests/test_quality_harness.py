"""The quality benchmark harness on a tiny budget produces a well-formed report, and resumes."""

import json
import os
import re
import subprocess
import sys

import pytest
from conftest import REPO, tiny_dataset


def _trained(stdout: str) -> bool:
    """Whether the harness's log says it trained something."""
    return "faster_rcnn: fine-tune" in stdout or "faster_rcnn: pre-training" in stdout


@pytest.mark.timeout(900)
def test_tiny_quality_run(tmp_path):
    data = tiny_dataset(tmp_path / "tiny", train=2, val=2)
    out = tmp_path / "report"
    cmd = [
        sys.executable,
        str(REPO / "benchmarks" / "quality.py"),
        "--data",
        str(data),
        "--seeds",
        "0",
        "1",
        "--full-seeds",
        "faster_rcnn=1",
        "--budgets",
        "0.5",
        "1",
        "--pretrain-iters",
        "2",
        "--finetune-iters",
        "2",
        "--work-dir",
        str(tmp_path / "work"),
        "--out",
        str(out),
        "--finetune-opts",
        "faster_rcnn:model.roi_heads.box_predictor.test_score_thresh=0.0",
        "fcos:optimizer.lr=5",  # another detector's: must not reach Faster R-CNN
    ]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    report = json.loads(out.with_name("report.json").read_text())
    # Seed 1 runs the shortest budget only (--full-seeds faster_rcnn=1).
    rows = {(s["arm"], s["iters"]): s["seeds"] for s in report["summary"]}
    assert rows == {
        ("aligndet", 1): [0, 1],
        ("aligndet", 2): [0],
        ("scratch", 1): [0, 1],
        ("scratch", 2): [0],
    }
    for s in report["summary"]:
        for key in ("bbox_agnostic/AP", "bbox/AP", "bbox/AP-person"):
            m = s[key]
            assert m["min"] <= m["mean"] <= m["max"] or m["mean"] != m["mean"]  # NaN: no person
        # Two labeled images: every class is rare, the other bins are empty and left out.
        assert list(s["by_frequency"]) == ["rare"]
    # The detector prefix is stripped from the run's name and the other detector's override dropped.
    assert {p.name for p in (tmp_path / "work" / "faster_rcnn").iterdir()} == {
        "pretrain",
        "ft_roi_heads.box_predictor.test_score_thresh-0.0",
    }
    md = out.with_name("report.md").read_text()
    assert "| faster_rcnn | main | 1 | aligndet | 2 |" in md and "Wall time" in md
    assert "AP50 by class frequency" in md
    assert re.search(r"\| faster_rcnn \| main \| 2 \| scratch \| 1 \| [0-9.]+ \| - \| - \|", md)
    assert out.with_name("report.png").stat().st_size > 1000
    # A second run finds every result and trains nothing.
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    assert again.returncode == 0
    assert not _trained(again.stdout)

    # --report-only trains nothing and reports the finished runs of a larger grid.
    only = subprocess.run(
        [*cmd, "--seeds", "0", "1", "2", "--report-only"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
    )
    assert only.returncode == 0, only.stderr[-2000:]
    assert not _trained(only.stdout)
    summary = json.loads(out.with_name("report.json").read_text())["summary"]
    assert {(s["arm"], s["iters"]): s["seeds"] for s in summary} == rows


def test_bad_detector_variants_named():
    run = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "quality.py"), "--detector-variants", "fcos=x"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert run.returncode != 0 and "--detector-variants" in run.stderr and "'fcos=x'" in run.stderr


@pytest.mark.parametrize(
    "opt, message",
    [("yolo:optimizer.lr=1", "'yolo' in 'yolo:optimizer.lr=1'"), ("optimizer.lr", "key=value")],
)
def test_bad_detector_opts_named(opt, message):
    run = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "quality.py"), "--finetune-opts", opt],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert run.returncode != 0 and "--finetune-opts" in run.stderr and message in run.stderr
