"""The experiment layer the demo and the benchmarks share: the detector table, the train_net.py
runner, run naming."""

import shutil
from pathlib import Path

import pytest
from conftest import CONFIGS, REPO, load_benchmark

from aligndet_d2.experiment import (
    DETECTORS,
    RESULTS,
    Run,
    export_once,
    get_detector,
    opts_for,
    opts_tag,
    proposals_once,
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


def test_a_run_spells_its_overrides_in_order_and_trains_into_its_directory(tmp_path, monkeypatch):
    import aligndet_d2.experiment.stages as stages

    run = Run(
        "configs/finetune_fcos_voc_cpu.py",
        max_iter=30,
        seed=2,
        data=("dataloader.train.dataset.names.json_file=a.json",),
        init="",
        eval_period=10,
        checkpoint_period=10,
        log_period=5,
        extra=("train.max_iter=40",),  # the caller's overrides come last, and win
    )
    assert run.args() == [
        "--config-file",
        "configs/finetune_fcos_voc_cpu.py",
        "dataloader.train.dataset.names.json_file=a.json",
        "train.init_checkpoint=",
        "train.max_iter=30",
        "train.eval_period=10",
        "train.seed=2",
        "train.checkpointer.period=10",
        "train.log_period=5",
        "train.max_iter=40",
    ]
    # Unset periods and init keep the config's.
    assert Run("c.py", max_iter=3, seed=0).args() == [
        "--config-file",
        "c.py",
        "train.max_iter=3",
        "train.seed=0",
    ]
    calls = []
    monkeypatch.setattr(stages, "train_net_resumable", lambda a, d: calls.append((a, d)) or 1.5)
    assert run.train(tmp_path) == 1.5 and calls == [(run.args(), tmp_path)]


def test_stages_are_done_once(tmp_path, monkeypatch):
    import aligndet_d2.checkpoint.export as export

    made = []
    monkeypatch.setattr(
        export,
        "export_checkpoint",
        lambda src, dst, k, d: made.append((dst, k, d)) or open(dst, "w"),
    )
    out = export_once(tmp_path, keep_reg=True)
    assert out == tmp_path / "exported_keep_reg.pth" and made == [(str(out), True, False)]
    assert export_once(tmp_path, keep_reg=True) == out and len(made) == 1  # not made again
    assert export_once(tmp_path, drop_rpn=True).name == "exported_drop_rpn.pth"
    props = tmp_path / "p.json"
    props.write_text("{}")
    assert proposals_once(str(tmp_path), props) is None  # exists: not generated again


def test_two_manifests_of_one_file_keep_each_others_rows(tmp_path):
    from aligndet_d2.experiment import Manifest

    path = tmp_path / "runs.json"
    a, b = Manifest(path), Manifest(path)
    a.record("det/ft/scratch_p10_seed1", {"ap": 1.0})
    b.record("det/ft/scratch_p10_seed2", {"ap": 2.0})  # b has not read a's row
    again = Manifest(path)
    assert dict(again) == {
        "det/ft/scratch_p10_seed1": {"ap": 1.0},
        "det/ft/scratch_p10_seed2": {"ap": 2.0},
    }
    path.write_text('{"det": ')
    with pytest.raises(SystemExit, match=f"{path}: not a json manifest"):
        Manifest(path)
    assert path.read_text() == '{"det": '  # nothing lost


@pytest.mark.parametrize(
    "name", ["quality", "momentum", "clusters", "speed", "proposals", "step_ops", "loader"]
)
def test_report_only_writes_every_committed_report_again_identically(name, tmp_path, capsys):
    # Each report's markdown is a function of its committed json: --report-only runs nothing
    # and must give back the committed file (a changed report formatter shows up here).
    shutil.copy(RESULTS / f"{name}.json", tmp_path / f"{name}.json")
    argv = ["--report-only", "--out", str(tmp_path / name)]
    if name == "quality":
        argv += ["--work-dir", str(tmp_path / "no_work_dir")]
    load_benchmark(name).main(argv)
    assert (tmp_path / f"{name}.md").read_text() == (RESULTS / f"{name}.md").read_text()
    assert (tmp_path / f"{name}.json").read_text() == (RESULTS / f"{name}.json").read_text()
    if name == "quality":
        assert (tmp_path / "quality.png").stat().st_size > 0


def test_report_only_without_a_report_says_to_run_the_benchmark(tmp_path):
    with pytest.raises(SystemExit, match="momentum.json does not exist: run the benchmark"):
        load_benchmark("momentum").main(["--report-only", "--out", str(tmp_path / "momentum")])
