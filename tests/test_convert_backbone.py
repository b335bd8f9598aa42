"""Image-domain ResNet checkpoints converted to Detectron2: each layout gives Detectron2's ResNet
the same stage outputs as torchvision's model, and other architectures are refused clearly.

The layouts are rebuilt here as each project's training code saves them (prefixes, momentum
encoders, heads, queues, optimizer state); the momentum encoders hold other weights than the
online ones, so picking the wrong encoder fails the comparison.
"""

import contextlib
import io
import pickle
import re
import subprocess
import sys

import pytest
import torch
import torchvision
from conftest import CONFIGS, REPO
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import LazyConfig, instantiate
from detectron2.modeling.backbone.resnet import BasicStem, ResNet
from omegaconf import OmegaConf

from aligndet_d2.checkpoint.convert import (
    LAYOUTS,
    PIXEL_MEAN,
    PIXEL_STD,
    BackboneConversionError,
    config_overrides,
    convert_resnet,
    family_of,
    write_converted,
)
from aligndet_d2.cli.convert_backbone import main as convert_main
from aligndet_d2.engine.train_loop import check_init_checkpoint, load_init_checkpoint


def _torchvision_resnet(depth=50, seed=0):
    """A randomly initialised torchvision ResNet with non-trivial BN statistics, in eval mode."""
    torch.manual_seed(seed)
    net = getattr(torchvision.models, f"resnet{depth}")()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)
    return net.eval()


def _torchvision_stages(net, x):
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    out = {}
    for i in range(1, 5):
        x = getattr(net, f"layer{i}")(x)
        out[f"res{i + 1}"] = x
    return out


def _prefixed(state, prefix, drop_fc=False):
    return {prefix + k: v for k, v in state.items() if not (drop_fc and k.startswith("fc."))}


def _layout(name, online, other):
    """A checkpoint in ``name``'s layout: ``online`` is the encoder to convert, ``other`` a decoy
    (momentum encoder or student) state dict with other values."""
    mlp = {"0.weight": torch.randn(8, 2048), "2.weight": torch.randn(4, 8)}
    if name == "torchvision":
        return dict(online)
    if name == "moco_v2":
        state = {
            **_prefixed(online, "module.encoder_q.", drop_fc=True),
            **_prefixed(mlp, "module.encoder_q.fc."),
            **_prefixed(other, "module.encoder_k.", drop_fc=True),
            "module.queue": torch.randn(128, 16),
            "module.queue_ptr": torch.zeros(1, dtype=torch.long),
        }
        return {"epoch": 200, "arch": "resnet50", "state_dict": state, "optimizer": {"state": {}}}
    if name == "moco_v3":
        state = {
            **_prefixed(online, "module.base_encoder.", drop_fc=True),
            **_prefixed(mlp, "module.base_encoder.fc."),
            **_prefixed(other, "module.momentum_encoder.", drop_fc=True),
            **_prefixed(mlp, "module.predictor."),
        }
        return {"epoch": 100, "arch": "resnet50", "state_dict": state}
    if name == "densecl":  # OpenSelfSup: encoder_q = Sequential(backbone, neck), backbone aliased
        state = {
            **_prefixed(online, "encoder_q.0.", drop_fc=True),
            **_prefixed(mlp, "encoder_q.1.mlp."),
            **_prefixed(online, "backbone.", drop_fc=True),
            **_prefixed(other, "encoder_k.0.", drop_fc=True),
            "queue": torch.randn(128, 16),
            "queue2": torch.randn(128, 16),
        }
        return {"meta": {"epoch": 200}, "state_dict": state}
    if name == "pixpro":
        state = {
            **_prefixed(online, "module.encoder.", drop_fc=True),
            **_prefixed(other, "module.encoder_k.", drop_fc=True),
            **_prefixed(mlp, "module.projector."),
            **_prefixed(mlp, "module.value_transform."),
        }
        return {"opt": {"arch": "resnet50"}, "model": state, "epoch": 400}
    if name == "simsiam":
        state = {
            **_prefixed(online, "module.encoder.", drop_fc=True),
            **_prefixed(mlp, "module.encoder.fc."),
            **_prefixed(mlp, "module.predictor."),
        }
        return {"epoch": 100, "arch": "resnet50", "state_dict": state}
    if name == "dino":
        return {
            "student": {**_prefixed(other, "module.backbone."), **_prefixed(mlp, "module.head.")},
            "teacher": {**_prefixed(online, "module.backbone."), **_prefixed(mlp, "module.head.")},
            "epoch": 800,
        }
    if name == "swav":  # the released file: a bare DataParallel state dict
        return {
            **_prefixed(online, "module.", drop_fc=True),
            **_prefixed(mlp, "module.projection_head."),
            "module.prototypes.weight": torch.randn(3000, 128),
        }
    raise KeyError(name)


@pytest.fixture(scope="module")
def nets():
    return _torchvision_resnet(seed=0), _torchvision_resnet(seed=1)


def _d2_resnet(depth=50):
    stages = ResNet.make_default_stages(depth, stride_in_1x1=False, norm="FrozenBN")
    return ResNet(BasicStem(norm="FrozenBN"), stages, out_features=["res2", "res3", "res4", "res5"])


@pytest.mark.parametrize("layout", [lay.name for lay in LAYOUTS])
def test_each_layout_converts_to_the_same_stage_outputs(layout, nets, tmp_path):
    online, other = nets
    ckpt = _layout(layout, online.state_dict(), other.state_dict())
    conv = convert_resnet(ckpt)  # detected
    assert conv.layout.name == layout and conv.depth == 50
    assert convert_resnet(ckpt, layout).state.keys() == conv.state.keys()  # forced
    model = _d2_resnet()
    assert set(conv.state) == set(model.state_dict())  # nothing missing, nothing extra
    # Ignored: everything but the online encoder's ResNet weights.
    assert not any(
        k.startswith(("module.encoder_k", "encoder_k", "student")) for k in conv.converted
    )
    assert any("num_batches_tracked" in k for k in conv.ignored)
    path = str(tmp_path / "r50.pkl")
    write_converted(conv, path)
    DetectionCheckpointer(model).load(path)  # Detectron2's suffix matching of model-zoo files
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        ours, ref = model(x), _torchvision_stages(online, x)
    for k in ref:
        torch.testing.assert_close(ours[k], ref[k], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("depth,suffix", [(50, ".pth"), (101, ".pkl")])
def test_converted_weights_load_into_a_paper_config(depth, suffix, tmp_path):
    """The user's path: convert, then the paper configs with the printed overrides load them."""
    net = _torchvision_resnet(depth)
    conv = convert_resnet({"state_dict": net.state_dict()})
    assert conv.depth == depth
    path = str(tmp_path / f"r{depth}{suffix}")
    write_converted(conv, path)
    cfg = LazyConfig.load(str(CONFIGS / "finetune_faster_rcnn.py"))
    cfg = LazyConfig.apply_overrides(cfg, config_overrides(depth))
    assert cfg.dataloader.train.mapper.image_format == "RGB"
    assert cfg.dataloader.test.mapper.image_format == "RGB"
    model = instantiate(cfg.model).eval()
    assert model.input_format == "RGB" and model.pixel_std.flatten().tolist() == pytest.approx(
        [58.395, 57.12, 57.375]
    )
    DetectionCheckpointer(model).load(path)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ours, ref = model.backbone.bottom_up(x), _torchvision_stages(net, x)
    for k in ref:
        torch.testing.assert_close(ours[k], ref[k], atol=1e-4, rtol=1e-4)
    # The pre-training config takes the same overrides under model.detector.
    pre = LazyConfig.load(str(CONFIGS / "pretrain_box_faster_rcnn.py"))
    pre = LazyConfig.apply_overrides(pre, config_overrides(depth, "model.detector"))
    assert pre.model.detector.backbone.bottom_up.stages.stride_in_1x1 is False
    assert pre.model.detector.backbone.bottom_up.stages.depth == depth
    assert pre.dataloader.train.mapper.image_format == "RGB"


@pytest.mark.parametrize(
    "arch,message",
    [
        ("mobilenet_v2", "no ResNet in the known layouts"),
        ("wide_resnet50_2", "keys of another shape"),
        ("resnext50_32x4d", "keys of another shape"),
        ("resnet18", "basic blocks"),
    ],
)
def test_other_architectures_are_refused(arch, message):
    net = getattr(torchvision.models, arch)()
    with pytest.raises(BackboneConversionError, match=message):
        convert_resnet(net.state_dict())


def test_a_forced_layout_that_does_not_fit_is_refused(nets):
    ckpt = _layout("moco_v3", nets[0].state_dict(), nets[1].state_dict())
    with pytest.raises(BackboneConversionError, match="the moco_v2 layout"):
        convert_resnet(ckpt, "moco_v2")
    with pytest.raises(BackboneConversionError, match="unknown layout"):
        convert_resnet(ckpt, "mocov3")


def test_cli_converts_and_prints_the_overrides(nets, tmp_path):
    src = tmp_path / "moco.pth.tar"
    torch.save(_layout("moco_v2", nets[0].state_dict(), nets[1].state_dict()), src)
    out = tmp_path / "moco.pkl"
    cmd = [sys.executable, str(REPO / "tools" / "convert_backbone.py"), "--input", str(src)]
    run = subprocess.run([*cmd, "--output", str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "moco_v2 layout, ResNet-50" in run.stdout and "missing: 0" in run.stdout
    assert "module.encoder_k.*: 265" in run.stdout and "module.queue: 1" in run.stdout
    assert "model.backbone.bottom_up.stages.stride_in_1x1=False" in run.stdout
    assert "model.detector.backbone.bottom_up.stages.stride_in_1x1=False" in run.stdout
    with open(out, "rb") as f:
        data = pickle.load(f)
    assert data["matching_heuristics"] and len(data["model"]) == 265
    # Bad input: an error naming the file, nothing written (in this process: one start is enough).
    bad = tmp_path / "mobilenet.pth"
    torch.save(torchvision.models.mobilenet_v2().state_dict(), bad)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code, _ = _convert_cli(["--input", str(bad), "--output", str(tmp_path / "x.pkl")])
    assert code == 1 and f"error: {bad}: no ResNet" in err.getvalue()
    assert not (tmp_path / "x.pkl").exists()


def test_an_output_of_another_format_is_refused(nets, tmp_path):
    conv = convert_resnet(nets[0].state_dict())
    with pytest.raises(ValueError, match=r"r50.pt: the output must end in .pkl or .pth"):
        write_converted(conv, str(tmp_path / "r50.pt"))


# A fine-tune and a pre-training config of each detector family (FCOS: no input_format; DETR: the
# ResNet at model.backbone, no FPN).
FAMILY_CONFIGS = {
    "faster_rcnn": ("finetune_faster_rcnn.py", "pretrain_box_faster_rcnn.py"),
    "retinanet": ("finetune_retinanet.py", "pretrain_box_retinanet.py"),
    "fcos": ("finetune_fcos.py", "pretrain_box_fcos.py"),
    "detr": ("finetune_detr.py", "pretrain_box_detr.py"),
}
# torchvision's ImageNet normalisation (0-1 RGB), which the converted weights were trained with.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _convert_cli(argv):
    """(exit code, stdout) of tools/convert_backbone.py run in this process."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = convert_main(argv)
    return code, out.getvalue()


def _printed_overrides(stdout):
    """{(family name, "fine-tune" / "pre-train"): [key=value, ...]} of the tool's printed lines."""
    found, family = {}, None
    for line in stdout.splitlines():
        if not line.startswith(" ") and ": " in line:
            family = line.split(": ")[0]
        m = re.match(r"  (fine-tune|pre-train): train\.init_checkpoint=\S+ (.*)$", line)
        if m:
            found[(family, m.group(1))] = m.group(2).split()
    return found


def _apply_overrides(name, overrides):
    """``name`` with ``overrides`` applied, after checking that each names a node the config
    already has: apply_overrides adds a missing one silently, and the build then fails."""
    cfg = LazyConfig.load(str(CONFIGS / name))
    for o in overrides:
        key = o.split("=")[0]
        assert OmegaConf.select(cfg, key, default=KeyError) is not KeyError, f"{name}: no {key}"
    return LazyConfig.apply_overrides(cfg, overrides)


def _assert_torchvision_input(cfg, root, detector, depth):
    """The config nodes the overrides set hold torchvision's input and the ResNet's depth."""
    det = OmegaConf.select(cfg, root)
    net = OmegaConf.select(det, family_of(detector).resnet)
    assert net.stages.stride_in_1x1 is False and net.stages.depth == depth
    assert list(det.pixel_mean) == pytest.approx([255 * m for m in IMAGENET_MEAN])
    assert list(det.pixel_std) == pytest.approx([255 * s for s in IMAGENET_STD])
    assert det.get("input_format", "RGB") == "RGB"
    assert cfg.dataloader.train.mapper.image_format == "RGB"
    if "test" in cfg.dataloader:
        assert cfg.dataloader.test.mapper.image_format == "RGB"


@pytest.fixture(scope="module")
def torchvision_file(nets, tmp_path_factory):
    path = tmp_path_factory.mktemp("tv") / "resnet50.pth"
    torch.save(nets[0].state_dict(), path)
    return path


@pytest.fixture(scope="module")
def printed_pkl(torchvision_file, tmp_path_factory):
    """The tool's output for a .pkl, which every detector takes: the printed text."""
    out = tmp_path_factory.mktemp("pkl") / "r50.pkl"
    code, stdout = _convert_cli(["--input", str(torchvision_file), "--output", str(out)])
    assert code == 0
    return stdout


@pytest.mark.parametrize("detector", sorted(FAMILY_CONFIGS))
def test_printed_overrides_apply_and_build_for_each_family(detector, printed_pkl):
    printed = _printed_overrides(printed_pkl)
    name = family_of(detector).name
    for (finetune, pretrain), root, what in (
        (FAMILY_CONFIGS[detector], "model", "fine-tune"),
        (FAMILY_CONFIGS[detector][::-1], "model.detector", "pre-train"),
    ):
        cfg = _apply_overrides(finetune, printed[(name, what)])
        _assert_torchvision_input(cfg, root, detector, 50)
        with torch.device("meta"):  # the whole detector builds; shapes only, no init cost
            instantiate(cfg.model)


@pytest.mark.parametrize("detector", sorted(FAMILY_CONFIGS))
def test_the_depth_override_reaches_each_familys_resnet(detector):
    for name, root in zip(FAMILY_CONFIGS[detector], ("model", "model.detector")):
        cfg = _apply_overrides(name, config_overrides(101, root, detector))
        _assert_torchvision_input(cfg, root, detector, 101)
        with torch.device("meta"):  # the ResNet alone: the detector's build is tested above
            resnet = instantiate(OmegaConf.select(cfg, f"{root}.{family_of(detector).resnet}"))
        assert len(resnet.res4) == 23  # ResNet-101's third stage


def test_printed_pixel_statistics_are_torchvision_imagenet_rgb(printed_pkl):
    # torchvision's own constants of its ImageNet weights, in RGB order.
    preset = torchvision.models.ResNet50_Weights.IMAGENET1K_V1.transforms()
    assert tuple(preset.mean) == IMAGENET_MEAN and tuple(preset.std) == IMAGENET_STD
    mean, std = [255 * m for m in IMAGENET_MEAN], [255 * s for s in IMAGENET_STD]
    assert PIXEL_MEAN == pytest.approx(mean) and PIXEL_STD == pytest.approx(std)
    lines = _printed_overrides(printed_pkl)
    assert len(lines) == 6  # fine-tune and pre-train of three families
    for (family, what), overrides in lines.items():
        values = {}
        for o in overrides:
            key, value = o.split("=", 1)
            if key.endswith(("pixel_mean", "pixel_std")):
                values[key.rsplit(".", 1)[1]] = [float(v) for v in value.strip("[]").split(",")]
        assert values["pixel_mean"] == pytest.approx(mean, abs=1e-9), (family, what)
        assert values["pixel_std"] == pytest.approx(std, abs=1e-9), (family, what)
    assert "pixel_mean=[123.675,116.28,103.53]" in printed_pkl
    assert "pixel_std=[58.395,57.12,57.375]" in printed_pkl


def test_a_pth_for_detr_loads_whole_into_the_detr_resnet(nets, torchvision_file, tmp_path):
    out = tmp_path / "r50_detr.pth"
    code, stdout = _convert_cli(
        ["--input", str(torchvision_file), "--output", str(out), "--detector", "detr"]
    )
    assert code == 0 and "keys under backbone." in stdout
    state = torch.load(out, weights_only=False)["model"]
    assert len(state) == 265 and all(k.startswith("backbone.") for k in state)
    printed = _printed_overrides(stdout)
    assert set(printed) == {("DETR", "fine-tune"), ("DETR", "pre-train")}
    cfg = _apply_overrides("finetune_detr.py", printed[("DETR", "fine-tune")])
    detr = torch.nn.Module()  # DETR's names for its ResNet, without building its transformer
    detr.backbone = instantiate(cfg.model.backbone).eval()
    assert set(state) == set(detr.state_dict())
    load_init_checkpoint(detr, str(out))  # train_net's key check passes, then Detectron2 loads
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ours, ref = detr.backbone(x)["res5"], _torchvision_stages(nets[0], x)["res5"]
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)
    # Pre-training loads it into the pair's online branch: the same names there.
    pre = _apply_overrides("pretrain_box_detr.py", printed[("DETR", "pre-train")])
    with torch.device("meta"):
        pair = instantiate(pre.model)
    online = {k for k in pair.online.state_dict() if k.startswith("backbone.")}
    assert online == set(state)
    check_init_checkpoint(pair, str(out))


def test_a_pth_gets_only_the_overrides_of_the_detectors_it_loads_into(torchvision_file, tmp_path):
    out = tmp_path / "r50.pth"
    code, stdout = _convert_cli(["--input", str(torchvision_file), "--output", str(out)])
    assert code == 0 and "keys under backbone.bottom_up." in stdout
    assert all(k.startswith("backbone.bottom_up.") for k in torch.load(out)["model"])
    printed = _printed_overrides(stdout)
    assert not any(family == "DETR" for family, _ in printed)  # it would load nothing there
    assert "--detector detr (or --prefix backbone.), or write a .pkl" in stdout
    assert "model.backbone.stages" not in stdout
    # A prefix that the detector's ResNet does not have: an error, nothing written.
    bad = tmp_path / "bad.pth"
    argv = ["--input", str(torchvision_file), "--output", str(bad), "--detector", "detr"]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code, _ = _convert_cli(argv + ["--prefix", "backbone.bottom_up."])
    assert (
        code == 1 and f"error: {bad}: --prefix backbone.bottom_up. does not fit" in err.getvalue()
    )
    assert not bad.exists()
