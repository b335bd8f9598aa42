"""Export -> stock Detectron2 load, with the per-module key report and the mismatch errors."""

import pytest
import torch
from conftest import CONFIGS
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import LazyConfig, instantiate

from aligndet_d2.checkpoint.export import ExportMismatchError, key_report, load_checkpoint_file
from aligndet_d2.cli.export import main as export_main
from aligndet_d2.engine.train_loop import check_init_checkpoint

FT = str(CONFIGS / "finetune_faster_rcnn_cpu.py")


@pytest.fixture(scope="module")
def pretrain_ckpt(tmp_path_factory):
    cfg = LazyConfig.load(str(CONFIGS / "pretrain_box_faster_rcnn_cpu.py"))
    torch.manual_seed(0)
    pair = instantiate(cfg.model)
    path = tmp_path_factory.mktemp("export") / "model_final.pth"
    torch.save({"model": pair.state_dict(), "iteration": 191}, path)
    return path, pair


def _finetune_model(*overrides):
    cfg = LazyConfig.apply_overrides(LazyConfig.load(FT), list(overrides))
    return instantiate(cfg.model)


def test_export_then_stock_load(pretrain_ckpt, tmp_path, capsys):
    path, pair = pretrain_ckpt
    out = tmp_path / "exported.pth"
    assert (
        export_main(["--checkpoint", str(path), "--output", str(out), "--finetune-config", FT]) == 0
    )
    printed = capsys.readouterr().out
    assert "| module" in printed and "| RPN" in printed and "dropped at export" in printed
    exported = load_checkpoint_file(str(out))
    keys = set(exported["model"])
    assert not any(".projector." in k for k in keys)
    assert "roi_heads.box_predictor.bbox_pred.weight" not in keys  # dropped by default
    assert exported["aligndet_export"]["iteration"] == 191

    model = _finetune_model()
    report = key_report(
        exported["model"], model.state_dict(), exported["aligndet_export"]["dropped"]
    )
    for module in ("backbone", "FPN", "RPN", "box head"):
        assert report[module]["transferred"] and not report[module]["random_init"], module
        assert not report[module]["mismatched"], module
    assert sorted(report["predictor"]["random_init"]) == [
        "roi_heads.box_predictor.bbox_pred.bias",
        "roi_heads.box_predictor.bbox_pred.weight",
        "roi_heads.box_predictor.cls_score.bias",
        "roi_heads.box_predictor.cls_score.weight",
    ]
    # Stock Detectron2 loading: the neck, RPN and box head are the online branch's.
    DetectionCheckpointer(model).load(str(out))
    online = pair.online.state_dict()
    for k, v in model.state_dict().items():
        if k.startswith(("backbone.", "proposal_generator.", "roi_heads.box_head.")):
            assert torch.equal(v, online[k]), k


def test_keep_box_regression_needs_class_agnostic_config(pretrain_ckpt, tmp_path, capsys):
    path, _ = pretrain_ckpt
    out = tmp_path / "kept.pth"
    args = [
        "--checkpoint",
        str(path),
        "--output",
        str(out),
        "--keep-box-regression",
        "--finetune-config",
        FT,
    ]
    assert export_main(args) == 1
    err = capsys.readouterr().err
    assert "predictor: 2 exported keys missing or of another shape" in err and not out.exists()
    assert export_main(args + ["model.roi_heads.box_predictor.cls_agnostic_bbox_reg=True"]) == 0
    state = load_checkpoint_file(str(out))["model"]
    assert state["roi_heads.box_predictor.bbox_pred.weight"].shape == (4, 512)


def test_drop_rpn_leaves_the_rpn_to_random_init(pretrain_ckpt, tmp_path, capsys):
    path, pair = pretrain_ckpt
    out = tmp_path / "no_rpn.pth"
    args = ["--checkpoint", str(path), "--output", str(out), "--drop-rpn", "--finetune-config", FT]
    assert export_main(args) == 0  # an RPN left out whole is no mismatch
    exported = load_checkpoint_file(str(out))
    assert exported["aligndet_export"]["drop_rpn"] is True
    assert not any(k.startswith("proposal_generator.") for k in exported["model"])
    model = _finetune_model()
    check_init_checkpoint(model, str(out))  # train_net accepts it
    report = key_report(
        exported["model"], model.state_dict(), exported["aligndet_export"]["dropped"]
    )
    rpn_keys = sorted(k for k in model.state_dict() if k.startswith("proposal_generator."))
    assert sorted(report["RPN"]["dropped"]) == sorted(report["RPN"]["random_init"]) == rpn_keys
    assert not report["RPN"]["transferred"] and report["box head"]["transferred"]


def test_other_backbone_is_refused_listing_modules(pretrain_ckpt, tmp_path, capsys):
    path, _ = pretrain_ckpt
    out = tmp_path / "exported.pth"
    assert export_main(["--checkpoint", str(path), "--output", str(out)]) == 0
    r50 = str(CONFIGS / "finetune_faster_rcnn.py")
    assert (
        export_main(
            [
                "--checkpoint",
                str(path),
                "--output",
                str(tmp_path / "x.pth"),
                "--finetune-config",
                r50,
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "do not match this config" in err and "backbone:" in err and "FPN:" in err
    # train_net's check refuses it too (Detectron2's own loader would only warn).
    model = instantiate(LazyConfig.load(r50).model)
    with pytest.raises(ExportMismatchError, match="backbone: .*\n.*FPN"):
        check_init_checkpoint(model, str(out))


def test_wrong_checkpoints_are_named(pretrain_ckpt, tmp_path, capsys):
    path, _ = pretrain_ckpt
    out = tmp_path / "exported.pth"
    export_main(["--checkpoint", str(path), "--output", str(out)])
    capsys.readouterr()
    assert export_main(["--checkpoint", str(out), "--output", str(tmp_path / "y.pth")]) == 1
    assert "not a pre-training checkpoint" in capsys.readouterr().err
    with pytest.raises(ValueError, match="is a pre-training checkpoint: export it"):
        check_init_checkpoint(_finetune_model(), str(path))


@pytest.mark.parametrize("det", ["retinanet", "fcos"])
def test_dense_export_then_stock_load(det, tmp_path, capsys):
    cfg = LazyConfig.load(str(CONFIGS / f"pretrain_box_{det}_cpu.py"))
    pair = instantiate(cfg.model)
    torch.save({"model": pair.state_dict(), "iteration": 3}, tmp_path / "pre.pth")
    ft = str(CONFIGS / f"finetune_{det}_cpu.py")
    out = tmp_path / "exported.pth"
    assert (
        export_main(
            [
                "--checkpoint",
                str(tmp_path / "pre.pth"),
                "--output",
                str(out),
                "--finetune-config",
                ft,
            ]
        )
        == 0
    )
    exported = load_checkpoint_file(str(out))
    dropped = exported["aligndet_export"]["dropped"]
    assert any(".projector." in k for k in dropped)
    assert "head.bbox_pred.weight" in dropped
    assert ("head.ctrness.weight" in dropped) == (det == "fcos")
    model = instantiate(LazyConfig.load(ft).model)
    report = key_report(exported["model"], model.state_dict(), dropped)
    for module in ("backbone", "FPN", "dense towers"):
        assert report[module]["transferred"] and not report[module]["random_init"], module
    assert "head.cls_score.weight" in report["dense predictor"]["random_init"]
    DetectionCheckpointer(model).load(str(out))
    online = pair.online.state_dict()
    for k, v in model.state_dict().items():
        if k.startswith(("backbone.", "head.cls_subnet.", "head.bbox_subnet.")):
            assert torch.equal(v, online[k]), k
    # Kept regression layers load into the stock head as they are.
    kept = tmp_path / "kept.pth"
    assert (
        export_main(
            [
                "--checkpoint",
                str(tmp_path / "pre.pth"),
                "--output",
                str(kept),
                "--keep-box-regression",
                "--finetune-config",
                ft,
            ]
        )
        == 0
    )
    assert "head.bbox_pred.weight" in load_checkpoint_file(str(kept))["model"]
    # A dense detector has no RPN to drop: say so rather than export as if it did.
    capsys.readouterr()
    args = ["--checkpoint", str(tmp_path / "pre.pth"), "--output", str(tmp_path / "x.pth")]
    assert export_main(args + ["--drop-rpn"]) == 1
    assert "has no RPN" in capsys.readouterr().err and not (tmp_path / "x.pth").exists()
