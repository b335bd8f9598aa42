"""Image-domain ResNet checkpoints converted to Detectron2: each layout gives Detectron2's ResNet the
same stage outputs as torchvision's model, and other architectures are refused clearly.

The layouts are rebuilt here as each project's training code saves them (prefixes, momentum
encoders, heads, queues, optimizer state); the momentum encoders hold other weights than the
online ones, so picking the wrong encoder fails the comparison.
"""

import pickle
import subprocess
import sys

import pytest
import torch
import torchvision
from conftest import CONFIGS, REPO
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import LazyConfig, instantiate
from detectron2.modeling.backbone.resnet import BasicStem, ResNet

from aligndet_d2.checkpoint.convert import (
    LAYOUTS,
    BackboneConversionError,
    config_overrides,
    convert_resnet,
    write_converted,
)


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
    # Bad input: an error naming the file, nothing written.
    bad = tmp_path / "mobilenet.pth"
    torch.save(torchvision.models.mobilenet_v2().state_dict(), bad)
    run = subprocess.run(
        [*cmd[:2], "--input", str(bad), "--output", str(tmp_path / "x.pkl")],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 1 and f"error: {bad}: no ResNet" in run.stderr
    assert not (tmp_path / "x.pkl").exists()


def test_an_output_of_another_format_is_refused(nets, tmp_path):
    conv = convert_resnet(nets[0].state_dict())
    with pytest.raises(ValueError, match=r"r50.pt: the output must end in .pkl or .pth"):
        write_converted(conv, str(tmp_path / "r50.pt"))
