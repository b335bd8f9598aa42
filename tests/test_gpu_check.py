"""The prepared GPU check's parts that run without a GPU: its offline installer and the FrozenBN
calibration that keeps a randomly initialised backbone finite under float16."""

import os
import subprocess
import sys
import zipfile
from types import SimpleNamespace

import pytest
import torch
from conftest import REPO, load_benchmark
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling.backbone.resnet import build_resnet_backbone
from detectron2.structures import ImageList


def _wheel(path, files):
    with zipfile.ZipFile(path, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)


def test_installer_needs_no_network_and_unpacks_detectron2_code_only(tmp_path):
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    wheels.mkdir()
    # A pure-Python dependency, as pip wheel writes one, and Detectron2's cp310 wheel's layout.
    dist = "gpucheckdep-1.0.dist-info"
    _wheel(
        wheels / "gpucheckdep-1.0-py3-none-any.whl",
        {
            "gpucheckdep/__init__.py": "VALUE = 7\n",
            f"{dist}/METADATA": "Metadata-Version: 2.1\nName: gpucheckdep\nVersion: 1.0\n",
            f"{dist}/WHEEL": "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
            f"{dist}/RECORD": "",
        },
    )
    _wheel(
        wheels / "sal_detectron2-0.7.2-cp310-none-any.whl",
        {
            "detectron2/__init__.py": "",
            "detectron2/model_zoo/configs/Base-RCNN-FPN.yaml": "VERSION: 2\n",
            "detectron2/_C.cpython-310-x86_64-linux-gnu.so": "binary",
            "tools/train_net.py": "",
        },
    )
    env = dict(
        os.environ,
        PYTHON=sys.executable,
        ALIGNDET_GPU_WHEELS=str(wheels),
        ALIGNDET_GPU_SITE=str(site),
        PIP_INDEX_URL="http://127.0.0.1:9/unreachable",  # any index access would fail
    )
    run = subprocess.run(
        ["bash", "scripts/gpu_check.sh", "--install-only"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert (site / "gpucheckdep" / "__init__.py").read_text() == "VALUE = 7\n"
    assert (site / "detectron2" / "model_zoo" / "configs" / "Base-RCNN-FPN.yaml").exists()
    assert not list(site.glob("detectron2/_C*")) and not (site / "tools").exists()


def test_installer_without_prepared_wheels_says_what_to_run(tmp_path):
    env = dict(os.environ, ALIGNDET_GPU_WHEELS=str(tmp_path / "missing"))
    run = subprocess.run(
        ["bash", "scripts/gpu_check.sh"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert run.returncode != 0 and "gpu_check_prepare.sh" in run.stderr


def test_check_without_prepared_annotations_names_the_missing_file(tmp_path):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "train.json").write_text("{}")
    with pytest.raises(SystemExit) as exc:
        load_benchmark("gpu_check").main(
            ["--data", str(tmp_path), "--device", "cpu", "--precision", "none"]
        )
    message = str(exc.value)
    assert str(tmp_path / "annotations" / "train_proposals.json") in message
    assert "gpu_check_prepare.sh" in message


def test_frozen_bn_calibration_normalises_every_layer():
    gpu_check = load_benchmark("gpu_check")
    cfg = SimpleNamespace(
        MODEL=SimpleNamespace(
            BACKBONE=SimpleNamespace(FREEZE_AT=5),
            RESNETS=SimpleNamespace(
                NORM="FrozenBN", OUT_FEATURES=["res5"], DEPTH=50, NUM_GROUPS=1,
                WIDTH_PER_GROUP=64, STEM_OUT_CHANNELS=64, RES2_OUT_CHANNELS=256,
                STRIDE_IN_1X1=True, RES5_DILATION=1, DEFORM_ON_PER_STAGE=[False] * 4,
                DEFORM_MODULATED=False, DEFORM_NUM_GROUPS=1,
            ),
        )
    )  # fmt: skip
    torch.manual_seed(0)
    backbone = build_resnet_backbone(cfg, ShapeSpec(channels=3))
    images = torch.rand(2, 3, 128, 160) * 255 - 110  # pixel values minus a mean, std 1 (MSRA)
    detector = SimpleNamespace(
        backbone=SimpleNamespace(bottom_up=backbone),
        preprocess_image=lambda batch: ImageList.from_tensors(batch),
    )
    outputs = []
    for m in backbone.modules():
        if isinstance(m, FrozenBatchNorm2d):
            m.register_forward_hook(lambda m, i, o: outputs.append(o.clone()))  # before relu_
    with torch.no_grad():
        before = backbone(images)["res5"]
        outputs.clear()
        gpu_check._calibrate_frozen_bn(detector, list(images))
        outputs.clear()
        after = backbone(images)["res5"]
    assert len(outputs) == 53  # stem + 16 blocks x 3 + 4 shortcuts
    for o in outputs:
        assert o.mean(dim=(0, 2, 3)).abs().max() < 1e-3
        assert torch.allclose(o.var(dim=(0, 2, 3)), torch.ones(o.shape[1]), atol=1e-2)
    # Uncalibrated, the residual stages amplify: float16 tops out at 65504.
    assert before.abs().max() > 100 * after.abs().max()


def test_every_detector_checks_its_paper_configs_with_the_resnet_frozen(tmp_path):
    from aligndet_d2.modeling import FrozenResNet

    gpu_check = load_benchmark("gpu_check")
    assert {"faster_rcnn", "retinanet", "fcos", "cascade_rcnn", "detr"} <= set(gpu_check.DETECTORS)
    for det in gpu_check.DETECTORS:
        cfgs = gpu_check._configs(det, tmp_path, 2, "cpu")
        pre, sup = cfgs["pretrain"], cfgs["supervised_frozen"]
        for cfg in (pre.model.detector, sup.model):
            resnet = cfg.backbone.get("bottom_up", cfg.backbone)  # DETR has no FPN
            assert resnet._target_ is FrozenResNet and resnet.freeze_at == 5, det
        proposals = "train_proposals_k256.json" if det == "detr" else "train_proposals.json"
        assert pre.dataloader.train.dataset.json_file == str(tmp_path / "annotations" / proposals)
        for cfg in (pre, sup):
            assert cfg.dataloader.train.total_batch_size == 2 and cfg.train.device == "cpu"


def test_detr_check_without_cluster_labels_names_the_missing_file(tmp_path):
    (tmp_path / "annotations").mkdir()
    for f in ("train.json", "train_proposals.json"):
        (tmp_path / "annotations" / f).write_text("{}")
    with pytest.raises(SystemExit) as exc:
        load_benchmark("gpu_check").main(
            ["--data", str(tmp_path), "--device", "cpu", "--precision", "none", "--detectors",
             "faster_rcnn", "detr"]
        )  # fmt: skip
    assert str(tmp_path / "annotations" / "train_proposals_k256.json") in str(exc.value)
