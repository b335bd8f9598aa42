"""The experiment layer the demo and the benchmarks share: the detector table, the train_net.py
runner, run naming."""

from pathlib import Path

import pytest
from conftest import CONFIGS, REPO

from aligndet_d2.experiment import (
    DETECTORS,
    get_detector,
    opts_for,
    opts_tag,
    run_train_net,
    train_net_resumable,
)


def test_every_config_of_the_table_exists_under_its_stage():
    for det in DETECTORS.values():
        for (stage, setting, variant), path in det.configs.items():
            assert (REPO / path).is_file(), path
            name = Path(path).name
            assert name.startswith("pretrain_box_" if stage == "pretrain" else "finetune_"), path
            assert det.name in name and (setting.endswith("cpu") == name.endswith("_cpu.py"))
            assert variant in name


def test_every_pretraining_config_has_a_row():
    # A new detector's or variant's pre-training config must be declared in the table, or no
    # harness finds it.
    listed = {p for det in DETECTORS.values() for p in det.configs.values()}
    for path in sorted(CONFIGS.glob("pretrain_box_*.py")):
        assert f"configs/{path.name}" in listed, path.name


def test_the_facts_of_each_detector():
    assert [d for d in DETECTORS if DETECTORS[d].needs_clusters] == ["detr"]
    assert {d for d in DETECTORS if DETECTORS[d].has_rpn} == {"faster_rcnn", "cascade_rcnn"}
    # Only Faster R-CNN's fine-tune predictor is class-specific where the export's is agnostic.
    assert {d for d in DETECTORS if DETECTORS[d].keep_reg} == {"faster_rcnn"}
    assert get_detector("fcos").config("finetune", "voc_cpu", "frozen") == (
        "configs/finetune_fcos_frozen_voc_cpu.py"
    )
    assert get_detector("faster_rcnn").variants("pretrain", "cpu") == ["", "wide"]


def test_a_missing_config_or_detector_is_a_clear_error():
    with pytest.raises(KeyError, match=r"fcos has no pretrain config .*'wide'.*\['\(none\)'\]"):
        get_detector("fcos").config("pretrain", "cpu", "wide")
    with pytest.raises(KeyError, match=r"unknown detector 'yolo'; known: \['faster_rcnn'"):
        get_detector("yolo")


def test_overrides_reach_their_detector_and_name_the_run():
    items = ["train.seed=1", "fcos:model.head.num_convs=2", "retinanet:optimizer.lr=0.1"]
    assert opts_for("fcos", items, "--x") == ["train.seed=1", "model.head.num_convs=2"]
    assert opts_for("faster_rcnn", items, "--x") == ["train.seed=1"]
    assert opts_tag(opts_for("fcos", items, "--x")) == "_train.seed-1_head.num_convs-2"
    with pytest.raises(SystemExit, match="'yolo' in 'yolo:a=1' is not one of"):
        opts_for("fcos", ["yolo:a=1"], "--x")
    with pytest.raises(SystemExit, match="--x: expected \\[DETECTOR:\\]key=value, got 'a'"):
        opts_for("fcos", ["a"], "--x")


def test_a_failed_train_net_names_its_log_and_a_resumed_one_appends(tmp_path):
    log = tmp_path / "log.txt"
    with pytest.raises(SystemExit, match=rf"\[bench\] train_net.py failed \(exit \d+\); see {log}"):
        run_train_net(["--config-file", str(tmp_path / "missing.py")], log, name="bench")
    assert "missing.py" in log.read_text()  # the whole output is kept
    # A benchmark's run resumes from its last checkpoint and keeps the earlier output.
    (tmp_path / "last_checkpoint").write_text("model_0000004.pth")
    (tmp_path / "train_net.log").write_text("first segment\n")
    with pytest.raises(SystemExit):
        train_net_resumable(["--config-file", str(tmp_path / "missing.py")], tmp_path)
    text = (tmp_path / "train_net.log").read_text()
    assert text.startswith("first segment\n") and len(text) > len("first segment\n")


def test_get_config_finds_a_config_by_name_and_suggests_the_nearest():
    import aligndet_d2

    cfg = aligndet_d2.get_config("finetune_fcos_voc_cpu")
    assert cfg.train.output_dir == "output/finetune_fcos_voc_cpu"
    assert aligndet_d2.get_config_file("pretrain_box_detr_cpu.py") == str(
        CONFIGS / "pretrain_box_detr_cpu.py"
    )
    with pytest.raises(FileNotFoundError, match="did you mean finetune_fcos_voc_cpu.py"):
        aligndet_d2.get_config("finetune_fcos_vco_cpu.py")
