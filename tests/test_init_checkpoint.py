"""Initial weights: ImageNet R-50 files in Detectron2's .pkl layouts load into every config's model.

The stand-in files are written here from a randomly initialised R-50 (nothing is downloaded): the
MSRA / Caffe2 layout of ``detectron2://ImageNetPretrained/MSRA/R-50.pkl`` (Caffe2 blob names, BN
folded into scale and bias) and the layout of Detectron2's ``convert-torchvision-to-d2.py``
(Detectron2 names without the model prefix, ``matching_heuristics``). The MSRA one is put where
Detectron2's path manager caches that URL, so configs are loaded with the very string they hold.
"""

import os
import pickle
import re
from urllib.parse import urlparse

import numpy as np
import pytest
import torch
from conftest import COCO64, CONFIGS, Args
from detectron2.config import LazyConfig, instantiate

from aligndet_d2.checkpoint.convert import LAYOUTS, Conversion, write_converted
from aligndet_d2.checkpoint.export import export_state_dict, write_export
from aligndet_d2.engine.train_loop import (
    build_trainer,
    check_init_checkpoint,
    load_init_checkpoint,
)
from aligndet_d2.modeling import MomentumPair

MSRA_R50 = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
# torchvision's R-50 in Detectron2's names (the DETR configs', as Detectron2's DETR project).
TV_R50 = "detectron2://ImageNetPretrained/torchvision/R-50.pkl"
PRETRAIN = ["pretrain_box_faster_rcnn.py", "pretrain_box_retinanet.py", "pretrain_box_fcos.py"]
# What the weights a config names expect of the input (Detectron2's model zoo constants: the MSRA
# weights take BGR in 0..255 minus the mean, their std folded into conv1; stride in the 1x1 conv).
EXPECTED_INPUT = {
    MSRA_R50: dict(
        input_format="BGR",
        pixel_mean=[103.530, 116.280, 123.675],
        pixel_std=[1.0, 1.0, 1.0],
        stride_in_1x1=True,
    ),
    TV_R50: dict(
        input_format="RGB",
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
        stride_in_1x1=False,
    ),
}
# The CPU configs' EfficientNet-Lite0 loads its own ImageNet weights: RGB, (x - 127) / 128.
LITE_INPUT = dict(input_format="RGB", pixel_mean=[127.0] * 3, pixel_std=[128.0] * 3)


def _random_r50_state():
    """Detectron2 names -> random arrays for every tensor of the paper configs' R-50."""
    cfg = LazyConfig.load(str(CONFIGS / "pretrain_box_faster_rcnn.py"))
    net = instantiate(cfg.model.detector.backbone.bottom_up)
    g = torch.Generator().manual_seed(0)
    state = {}
    for k, v in net.state_dict().items():
        x = torch.randn(v.shape, generator=g)
        state[k] = (x.abs() + 0.5 if k.endswith("running_var") else x).numpy()
    return state


def _caffe2_name(key):
    """The MSRA / Caffe2 blob name of a Detectron2 ResNet key (None: not in such files)."""
    if key.endswith(("running_mean", "running_var")):
        return None  # Caffe2 folds BatchNorm into a scale and a bias
    key = key.replace("stem.conv1.norm.", "res_conv1_bn.").replace("stem.conv1.", "conv1.")
    for d2, c2 in (("conv1", "branch2a"), ("conv2", "branch2b"), ("conv3", "branch2c")):
        key = re.sub(rf"\.{d2}\.", f".{c2}.", key)
    key = key.replace(".shortcut.", ".branch1.").replace(".norm.", "_bn.")
    key = key.replace(".weight", ".w").replace(".bias", ".b")
    key = re.sub(r"_bn\.w$", "_bn.s", key)
    return key.replace(".", "_")


def _write_msra(path, state):
    blobs = {_caffe2_name(k): v for k, v in state.items() if _caffe2_name(k)}
    blobs["fc1000_w"] = np.zeros((1000, 2048), np.float32)  # the ImageNet classifier: ignored
    blobs["fc1000_b"] = np.zeros(1000, np.float32)
    with open(path, "wb") as f:
        pickle.dump(blobs, f)
    return {k: v for k, v in state.items() if _caffe2_name(k)}


def _write_torchvision(path, state):
    with open(path, "wb") as f:
        pickle.dump({"model": state, "__author__": "torchvision", "matching_heuristics": True}, f)
    return state


@pytest.fixture(scope="module")
def r50():
    return _random_r50_state()


@pytest.fixture(scope="module")
def msra_standin(r50, tmp_path_factory):
    """The MSRA-layout stand-in, where Detectron2 caches ``MSRA_R50`` (and a torchvision-layout one
    where it caches ``TV_R50``); yields the MSRA file's weights."""
    cache = tmp_path_factory.mktemp("fvcore_cache")
    targets = {}
    for url in (MSRA_R50, TV_R50):
        path = urlparse("https://dl.fbaipublicfiles.com/detectron2/" + url[len("detectron2://") :])
        targets[url] = cache / path.path.lstrip("/")
        targets[url].parent.mkdir(parents=True, exist_ok=True)
    expected = _write_msra(targets[MSRA_R50], r50)
    _write_torchvision(targets[TV_R50], r50)
    old = os.environ.get("FVCORE_CACHE")
    os.environ["FVCORE_CACHE"] = str(cache)
    yield expected
    if old is None:
        del os.environ["FVCORE_CACHE"]
    else:
        os.environ["FVCORE_CACHE"] = old


def test_caffe2_names_are_the_msra_file_names():
    # Spot checks against the blob names of Detectron2's ImageNetPretrained/MSRA/R-50.pkl.
    assert _caffe2_name("stem.conv1.weight") == "conv1_w"
    assert _caffe2_name("stem.conv1.norm.weight") == "res_conv1_bn_s"
    assert _caffe2_name("res2.0.conv1.weight") == "res2_0_branch2a_w"
    assert _caffe2_name("res3.1.conv3.norm.bias") == "res3_1_branch2c_bn_b"
    assert _caffe2_name("res5.0.shortcut.norm.weight") == "res5_0_branch1_bn_s"
    assert _caffe2_name("res4.2.conv2.norm.running_var") is None


def _assert_backbone_equals(detector, expected, where):
    net = getattr(detector.backbone, "bottom_up", detector.backbone)  # DETR's has no FPN
    state = net.state_dict()
    params = {k for k, _ in net.named_parameters()}
    for k, _ in net.named_buffers():
        if k.endswith((".weight", ".bias")):  # FrozenBN keeps its affine terms as buffers
            params.add(k)
    assert params and params <= set(expected), f"{where}: weights missing from the file"
    for k, v in expected.items():
        assert torch.equal(state[k], torch.as_tensor(v)), f"{where}: {k}"


def _pretrain_cfg(name, tmp_path, init):
    cfg = LazyConfig.load(str(CONFIGS / name))
    return LazyConfig.apply_overrides(
        cfg,
        [
            f"dataloader.train.dataset.json_file={COCO64 / 'annotations' / 'train.json'}",
            f"dataloader.train.dataset.image_root={COCO64 / 'images'}",
            "dataloader.train.num_workers=0",
            f"train.output_dir={tmp_path}",
            f"train.init_checkpoint={init}",
            "train.device=cpu",
        ],
    )


@pytest.mark.parametrize("layout", ["msra", "torchvision"])
@pytest.mark.parametrize("name", PRETRAIN)
def test_paper_pretraining_configs_load_imagenet_weights_into_both_branches(
    name, layout, r50, msra_standin, tmp_path
):
    if layout == "msra":
        init, expected = MSRA_R50, msra_standin  # the config's own value, resolved by Detectron2
        assert LazyConfig.load(str(CONFIGS / name)).train.init_checkpoint == MSRA_R50
    else:
        init = tmp_path / "R-50-torchvision.pkl"
        expected = _write_torchvision(init, r50)
    trainer, _, start = build_trainer(Args(), _pretrain_cfg(name, tmp_path / "out", init))
    pair = trainer.model
    assert isinstance(pair, MomentumPair) and start == 0
    _assert_backbone_equals(pair.online, expected, "online")
    trainer.start_iter, trainer.max_iter = 0, 10
    trainer.before_train()  # the momentum hook copies the online branch
    _assert_backbone_equals(pair.momentum, expected, "momentum")


def test_resume_without_a_checkpoint_loads_the_initial_weights(r50, msra_standin, tmp_path):
    cfg = _pretrain_cfg(PRETRAIN[0], tmp_path / "empty", MSRA_R50)
    trainer, checkpointer, start = build_trainer(Args(resume=True), cfg)
    assert not checkpointer.has_checkpoint() and start == 0
    _assert_backbone_equals(trainer.model.online, msra_standin, "online")


def _with_init(name):
    return LazyConfig.load(str(CONFIGS / name)).train.init_checkpoint


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.py")))
def test_every_configs_init_checkpoint_loads_and_matches_its_input(name, msra_standin, r50):
    cfg = LazyConfig.load(str(CONFIGS / name))
    init = cfg.train.init_checkpoint
    pretraining = name.startswith("pretrain_")
    detector = cfg.model.detector if pretraining else cfg.model
    net = detector.backbone.get("bottom_up", detector.backbone)
    formats = [cfg.dataloader.train.mapper.image_format]
    if "test" in cfg.dataloader:
        formats.append(cfg.dataloader.test.mapper.image_format)
    if init == "":
        # CPU configs: the EfficientNet-Lite0 backbone loads its ImageNet weights itself.
        assert "EfficientNetLite" in str(net._target_)
        expected = LITE_INPUT
    else:
        assert init in EXPECTED_INPUT, f"{name}: no stand-in of the right layout for {init}"
        expected = EXPECTED_INPUT[init]
        assert net.stages.stride_in_1x1 == expected["stride_in_1x1"]
    assert list(detector.pixel_mean) == pytest.approx(expected["pixel_mean"])
    assert list(detector.pixel_std) == pytest.approx(expected["pixel_std"])
    if "input_format" in detector:  # Detectron2's FCOS has none: its loader's format is the input
        assert detector.input_format == expected["input_format"]
    assert set(formats) == {expected["input_format"]}, f"{name}: loaders read {formats}"
    if init == "":
        return
    model = instantiate(cfg.model)
    load_init_checkpoint(model, init)
    weights = msra_standin if init == MSRA_R50 else r50  # the torchvision file holds all of r50
    _assert_backbone_equals(model.online if pretraining else model, weights, name)


def _meta_model(name, overrides=()):
    """The model of a config on the meta device: its state dict's names and shapes, built fast."""
    cfg = LazyConfig.apply_overrides(LazyConfig.load(str(CONFIGS / name)), list(overrides))
    with torch.device("meta"):
        return instantiate(cfg.model)


def _shapes_only(state):
    """Tensors of the shapes of ``state`` that take no room on disk (one stored value each)."""
    return {k: torch.zeros(()).expand(tuple(v.shape)) for k, v in state.items()}


def _converted_pth(path, state, prefix, depth=50):
    """A .pth as tools/convert_backbone.py writes it, of the Detectron2 ResNet names ``state``."""
    write_converted(Conversion(LAYOUTS[-1], "", depth, _shapes_only(state)), str(path), prefix)
    return str(path)


@pytest.mark.parametrize(
    "name,prefix,fix",
    [
        (
            "finetune_detr.py",
            "backbone.bottom_up.",
            "'backbone.' in place of 'backbone.bottom_up.'",
        ),
        (
            "pretrain_box_detr.py",
            "backbone.bottom_up.",
            "'backbone.' in place of 'backbone.bottom_up.'",
        ),
        ("finetune_faster_rcnn.py", "backbone.", "'backbone.bottom_up.' in place of 'backbone.'"),
    ],
)
def test_a_pth_of_which_nothing_loads_is_refused_before_training(name, prefix, fix, r50, tmp_path):
    path = _converted_pth(tmp_path / "r50.pth", r50, prefix)
    model = _meta_model(name)
    resnet = "backbone.bottom_up." if prefix == "backbone." else "backbone."
    # The pair loads it into its online branch, and is checked there.
    where = "the model's online branch" if name.startswith("pretrain_") else "the model"
    message = (
        rf"train.init_checkpoint={re.escape(path)}: none of its 265 tensors would load into "
        rf"{where} (?s:.*)in the file: {re.escape(prefix)}stem.conv1.weight(?s:.*)in {where}: "
        rf"{re.escape(resnet)}stem.conv1.weight(?s:.*){re.escape(fix)}(?s:.*)--prefix backbone\. "
        r"\(--detector detr\) for DETR(?s:.*)write a \.pkl"
    )
    with pytest.raises(ValueError, match=message):
        check_init_checkpoint(model, path)
    # --resume without a checkpoint to resume from goes straight to the initial weights.
    with pytest.raises(ValueError, match=message):
        load_init_checkpoint(model, path)


def test_plain_pths_that_fit_pass_the_key_check(r50, tmp_path):
    detr, pair = _meta_model("finetune_detr.py"), _meta_model("pretrain_box_detr.py")
    rcnn, retinanet = _meta_model("finetune_faster_rcnn.py"), _meta_model("finetune_retinanet.py")
    for model, prefix in ((detr, "backbone."), (pair, "backbone."), (rcnn, "backbone.bottom_up.")):
        assert check_init_checkpoint(model, _converted_pth(tmp_path / "c.pth", r50, prefix)) is None

    def save(state, **extra):
        torch.save({"model": _shapes_only(state), **extra}, tmp_path / "x.pth")
        return str(tmp_path / "x.pth")

    # A pre-training checkpoint given to the pair: loaded whole, into both branches.
    check_init_checkpoint(pair, save(pair.state_dict()))
    # Its export (tools/export.py) gets the export's own key report.
    state, dropped = export_state_dict(_shapes_only(pair.state_dict()))
    write_export(state, dropped, str(tmp_path / "export.pth"), source="pre.pth")
    assert "transformer" in check_init_checkpoint(detr, str(tmp_path / "export.pth"))
    # A Detectron2 training checkpoint, saved from DistributedDataParallel (fvcore strips module.).
    check_init_checkpoint(rcnn, save({f"module.{k}": v for k, v in rcnn.state_dict().items()}))
    # Another detector's checkpoint: only its backbone fits, a transfer of part of it.
    check_init_checkpoint(retinanet, save(rcnn.state_dict()))
    # Names that Detectron2 matches by suffix, as in a .pkl.
    check_init_checkpoint(detr, save(r50, matching_heuristics=True))
    # Not read: nothing to load, Detectron2's URLs (fetched by its path manager) and .pkl files.
    for path in ("", MSRA_R50, TV_R50, str(tmp_path / "absent.pkl")):
        assert check_init_checkpoint(detr, path) is None


def test_a_converted_backbone_of_another_depth_is_refused(r50, tmp_path):
    path = _converted_pth(tmp_path / "r50.pth", r50, "backbone.")
    r101 = _meta_model("finetune_detr.py", ["model.backbone.stages.depth=101"])
    with pytest.raises(
        ValueError,
        match=r"ResNet-50\) that does not fill the ResNet under 'backbone.': 255 of the model's ",
    ):
        check_init_checkpoint(r101, path)
    path = _converted_pth(tmp_path / "r101.pth", r101.backbone.state_dict(), "backbone.", 101)
    with pytest.raises(ValueError, match=r"ResNet-101\) that does not fill .*: 255 of its keys"):
        check_init_checkpoint(_meta_model("finetune_detr.py"), path)
