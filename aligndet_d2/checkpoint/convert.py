"""Image-domain backbones (supervised or self-supervised ResNets) converted to Detectron2 form.

AlignDet's first stage is a backbone the user already has: torchvision's supervised ImageNet weights
or a self-supervised checkpoint. Each project saves its ResNet under its own prefix, beside its
projection heads, momentum encoder or queues. :func:`convert_resnet` finds the image encoder
(:data:`LAYOUTS`, detected or forced), renames torchvision's ResNet keys to Detectron2's
(``layer1.0.bn1`` -> ``res2.0.conv1.norm``, ``downsample`` -> ``shortcut``), checks every key and
shape against Detectron2's ResNet of the detected depth, and reports what it converted, ignored
and missed.

All these checkpoints are torchvision ResNets: RGB input normalised with ImageNet's mean and std,
the stride in the 3x3 conv of a bottleneck (Detectron2: ``stride_in_1x1=False``), which
:func:`config_overrides` spells for a config. Where the ResNet sits depends on the detector
(:data:`FAMILIES`): the FPN detectors (R-CNN, RetinaNet, FCOS) have it at ``backbone.bottom_up``,
DETR at ``backbone``; a ``.pth`` output carries that prefix, a ``.pkl`` is matched by suffix into
either.
"""

from __future__ import annotations

import os
import pickle
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch

__all__ = [
    "CONVERTED_AUTHOR",
    "CONVERTIBLE",
    "FAMILIES",
    "LAYOUTS",
    "PIXEL_MEAN",
    "PIXEL_STD",
    "BackboneConversionError",
    "Conversion",
    "Family",
    "Layout",
    "config_overrides",
    "convert_resnet",
    "family_of",
    "ignored_groups",
    "load_backbone_checkpoint",
    "write_converted",
]

# torchvision's ImageNet normalisation on 0-255 RGB pixels, as Detectron2's pixel_mean / pixel_std.
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)
# Start of the ``__author__`` of the files :func:`write_converted` writes: train_net.py's check of
# train.init_checkpoint knows them as one whole ResNet, which must load whole.
CONVERTED_AUTHOR = "aligndet-d2 convert_backbone"
# Blocks per stage -> depth, for the bottleneck ResNets that Detectron2's configs build (the
# basic-block ResNet-18 / 34 take other stage arguments and are refused).
_DEPTHS = {(3, 4, 6, 3): 50, (3, 4, 23, 3): 101, (3, 8, 36, 3): 152}
_BLOCK_KEY = re.compile(r"^layer([1-4])\.(\d+)\.(conv[1-3]|bn[1-3]|downsample\.[01])\.(\w+)$")
_STEM_KEY = re.compile(r"^(conv1|bn1)\.(\w+)$")


class BackboneConversionError(ValueError):
    """The checkpoint holds no ResNet of a known layout, or one Detectron2 cannot take whole."""


@dataclass(frozen=True)
class Layout:
    """Where a project keeps its ResNet inside its checkpoint.

    Attributes:
        name: the ``--format`` name.
        containers: top-level entries that may hold the state dict, tried in order ("": the
            checkpoint itself is the state dict).
        prefixes: prefixes of the image encoder's keys in that state dict, tried in order.
        covers: the published checkpoints in this layout.
    """

    name: str
    containers: Tuple[str, ...]
    prefixes: Tuple[str, ...]
    covers: str


# Auto-detection takes the first layout whose container and prefix hold a ResNet stem and first
# block; the more specific prefixes come first, torchvision's empty one last.
LAYOUTS: Tuple[Layout, ...] = (
    Layout(
        "moco_v2",
        ("state_dict",),
        ("module.encoder_q.", "encoder_q."),
        "MoCo v1 / v2 training checkpoints (facebookresearch/moco: moco_v1_200ep_pretrain.pth.tar, "
        "moco_v2_200ep / 800ep_pretrain.pth.tar); the key encoder and the queue are ignored",
    ),
    Layout(
        "moco_v3",
        ("state_dict",),
        ("module.base_encoder.", "base_encoder."),
        "MoCo v3 ResNet-50 (facebookresearch/moco-v3: r-50-100ep / 300ep / 1000ep.pth.tar); the "
        "momentum encoder and the predictor are ignored",
    ),
    Layout(
        "densecl",
        ("state_dict",),
        ("encoder_q.0.",),
        "DenseCL training checkpoints (WXinlong/DenseCL, OpenSelfSup: work_dirs/.../epoch_*.pth); "
        "its released densecl_r50_*.pth files are already in torchvision layout",
    ),
    Layout(
        "pixpro",
        ("model",),
        ("module.encoder.", "encoder."),
        "PixPro (zdaxie/PixPro: pixpro_base_r50_100ep / 400ep_*.pth); the momentum encoder, "
        "projector, predictor and value transform are ignored",
    ),
    Layout(
        "simsiam",
        ("state_dict",),
        ("module.encoder.", "encoder."),
        "SimSiam (facebookresearch/simsiam: checkpoint_0099.pth.tar); encoder.fc is its projector, "
        "ignored with the predictor",
    ),
    Layout(
        "dino",
        ("teacher",),
        ("module.backbone.", "backbone."),
        "DINO full checkpoints (facebookresearch/dino: "
        "dino_resnet50_pretrain_full_checkpoint.pth): the teacher, the network DINO evaluates; "
        "the student and the heads are ignored",
    ),
    Layout(
        "swav",
        ("state_dict", ""),
        ("module.",),
        "SwAV (facebookresearch/swav: swav_800ep_pretrain.pth.tar and its training checkpoints); "
        "the projection head and the prototypes are ignored",
    ),
    Layout(
        "torchvision",
        ("state_dict", "model", ""),
        ("",),
        "torchvision's ImageNet weights (resnet50-*.pth, resnet101-*.pth) and the backbone-only "
        "releases in its layout (DINO dino_resnet50_pretrain.pth, DenseCL densecl_r50_*.pth, "
        "torch.hub SwAV / Barlow Twins ResNet-50)",
    ),
)


@dataclass(frozen=True)
class Family:
    """Detectors whose configs keep the ResNet at the same place and take the same overrides.

    Attributes:
        name: the name printed by ``tools/convert_backbone.py``.
        detectors: the ``--detector`` names (``configs/finetune_<name>.py``,
            ``configs/pretrain_box_<name>.py``).
        resnet: the ResNet's config node under the detector's (``model``, ``model.detector``),
            which is also its module path in the detector.
        input_format: whether the detector takes ``input_format`` (Detectron2's FCOS does not:
            its loader's ``image_format`` is its input).
    """

    name: str
    detectors: Tuple[str, ...]
    resnet: str
    input_format: bool = True

    @property
    def prefix(self) -> str:
        """The key prefix of the ResNet in the detector's state dict (a ``.pth`` output's)."""
        return self.resnet + "."


FAMILIES: Tuple[Family, ...] = (
    Family(
        "R-CNN / RetinaNet (FPN)",
        ("faster_rcnn", "mask_rcnn", "cascade_rcnn", "retinanet"),
        "backbone.bottom_up",
    ),
    Family("FCOS (FPN)", ("fcos",), "backbone.bottom_up", input_format=False),
    # No FPN: the ResNet is the backbone itself, as in Detectron2's DETR project.
    Family("DETR", ("detr",), "backbone"),
)
CONVERTIBLE: Tuple[str, ...] = tuple(d for fam in FAMILIES for d in fam.detectors)


def family_of(detector: str) -> Family:
    """The :data:`FAMILIES` entry of a detector name of :data:`CONVERTIBLE`."""
    for fam in FAMILIES:
        if detector in fam.detectors:
            return fam
    raise ValueError(f"unknown detector {detector!r}; known: {list(CONVERTIBLE)}")


@dataclass
class Conversion:
    """The result of :func:`convert_resnet`.

    Attributes:
        layout: the layout read.
        prefix: the image encoder's key prefix in it.
        depth: the ResNet's depth (50, 101 or 152).
        state: Detectron2 ResNet keys (``stem.conv1.weight``, ``res2.0.conv1.norm.weight``, ...)
            to tensors.
        converted: source key -> Detectron2 key.
        ignored: source keys left out (classifier, heads, momentum encoders, queues, optimizer
            state, BN step counters).
    """

    layout: Layout
    prefix: str
    depth: int
    state: Dict[str, torch.Tensor]
    converted: Dict[str, str] = field(default_factory=dict)
    ignored: List[str] = field(default_factory=list)


def _flat_state(ckpt: Mapping[str, Any], prefix: str = "") -> List[str]:
    """Every tensor key of a (possibly nested) checkpoint, for the report of what is ignored."""
    out = []
    for k, v in ckpt.items():
        if isinstance(v, Mapping):
            out += _flat_state(v, f"{prefix}{k}.")
        else:
            out.append(f"{prefix}{k}")
    return out


def _find(ckpt: Mapping[str, Any], layout: Layout) -> Optional[Tuple[str, str]]:
    """(container, prefix) of ``layout`` that holds a ResNet stem and first block, or None."""
    for container in layout.containers:
        state = ckpt if container == "" else ckpt.get(container)
        if not isinstance(state, Mapping):
            continue
        for prefix in layout.prefixes:
            if f"{prefix}conv1.weight" in state and f"{prefix}layer1.0.conv1.weight" in state:
                return container, prefix
    return None


def _d2_name(key: str) -> Optional[str]:
    """Detectron2's name of a torchvision ResNet key, or None for keys Detectron2 has no place for
    (the classifier ``fc``, BN's ``num_batches_tracked``)."""
    if key.endswith("num_batches_tracked"):
        return None
    m = _STEM_KEY.match(key)
    if m:
        return (
            f"stem.conv1.{m.group(2)}" if m.group(1) == "conv1" else f"stem.conv1.norm.{m.group(2)}"
        )
    m = _BLOCK_KEY.match(key)
    if not m:
        return None
    stage, block, layer, param = m.groups()
    res = f"res{int(stage) + 1}.{block}"
    if layer.startswith("conv"):
        return f"{res}.{layer}.{param}"
    if layer.startswith("bn"):
        return f"{res}.conv{layer[2]}.norm.{param}"
    return f"{res}.shortcut.{param}" if layer.endswith("0") else f"{res}.shortcut.norm.{param}"


def _detectron2_resnet_state(depth: int) -> Dict[str, torch.Size]:
    """Key -> shape of Detectron2's ResNet of ``depth`` with frozen BN (what a config builds)."""
    from detectron2.modeling.backbone.resnet import BasicStem, ResNet

    stages = ResNet.make_default_stages(depth, stride_in_1x1=False, norm="FrozenBN")
    with torch.device("meta"):  # shapes only: no memory, no init
        net = ResNet(BasicStem(norm="FrozenBN"), stages, out_features=["res5"])
    return {k: v.shape for k, v in net.state_dict().items()}


def convert_resnet(ckpt: Mapping[str, Any], layout: str = "auto") -> Conversion:
    """Finds the ResNet in a checkpoint and renames it to Detectron2's ResNet keys.

    Args:
        ckpt: the loaded checkpoint (a state dict, or a dict holding one).
        layout: a :data:`LAYOUTS` name, or "auto" to take the first that fits.

    Returns:
        The conversion: every key of Detectron2's ResNet of the detected depth, shapes checked.

    Raises:
        BackboneConversionError: no ResNet in a known (or the forced) layout, a depth Detectron2
            does not build, or keys missing or of another shape (another architecture, such as a
            wide or grouped ResNet).
    """
    names = [lay.name for lay in LAYOUTS]
    if layout != "auto" and layout not in names:
        raise BackboneConversionError(f"unknown layout {layout!r}; known: {names}")
    candidates = LAYOUTS if layout == "auto" else [lay for lay in LAYOUTS if lay.name == layout]
    found = None
    for lay in candidates:
        where = _find(ckpt, lay)
        if where:
            found = (lay, *where)
            break
    if found is None:
        where = "the known layouts " + str(names) if layout == "auto" else f"the {layout} layout"
        raise BackboneConversionError(
            f"no ResNet in {where} (looked for conv1.weight and layer1.0.conv1.weight under each "
            f"layout's prefix); the checkpoint's first entries: {list(ckpt)[:5]}"
        )
    lay, container, prefix = found
    source = ckpt if container == "" else ckpt[container]
    converted, ignored, state = {}, [], {}
    for key, value in source.items():
        name = _d2_name(key[len(prefix) :]) if key.startswith(prefix) else None
        if name is None or not torch.is_tensor(value):
            ignored.append(key)
            continue
        converted[key] = name
        state[name] = value.detach().clone()
    outside = [k for k in _flat_state(ckpt) if container and not k.startswith(container + ".")]
    ignored += outside
    blocks = tuple(
        len({k.split(".")[1] for k in state if k.startswith(f"res{s}.")}) for s in range(2, 6)
    )
    bottleneck = "res2.0.conv3.weight" in state
    depth = _DEPTHS.get(blocks) if bottleneck else None
    if depth is None:
        raise BackboneConversionError(
            f"{lay.name} layout: a ResNet with {blocks} {'bottleneck' if bottleneck else 'basic'} "
            "blocks per stage; supported: bottleneck ResNet-50 / 101 / 152"
        )
    expected = _detectron2_resnet_state(depth)
    missing = sorted(set(expected) - set(state))
    wrong = sorted(
        f"{k} {tuple(v.shape)} (Detectron2: {tuple(expected[k])})"
        for k, v in state.items()
        if k in expected and v.shape != expected[k]
    )
    extra = sorted(set(state) - set(expected))
    if missing or wrong or extra:
        problems = [
            f"{len(x)} {what} (first: {x[0]})"
            for x, what in (
                (missing, "keys missing"),
                (wrong, "keys of another shape"),
                (extra, "keys Detectron2 lacks"),
            )
            if x
        ]
        raise BackboneConversionError(
            f"{lay.name} layout, ResNet-{depth}: " + "; ".join(problems) + " — not a standard "
            "ResNet (a wide or grouped one, or another architecture?)"
        )
    return Conversion(lay, prefix, depth, state, converted, ignored)


def ignored_groups(conv: Conversion) -> List[Tuple[str, int]]:
    """The ignored keys grouped for a report: (``prefix.*`` or key, count), largest first. BN step
    counters form one group; other keys group by their first two name parts beyond the encoder's
    own prefix (``module.encoder_k.*``, ``module.encoder_q.fc.*``, ``queue``)."""
    counts: Dict[str, int] = {}
    for key in conv.ignored:
        if key.endswith("num_batches_tracked"):
            group = "*.num_batches_tracked"
        elif conv.prefix and key.startswith(conv.prefix):  # the encoder's classifier or projector
            group = conv.prefix + key[len(conv.prefix) :].split(".")[0] + ".*"
        else:
            parts = key.split(".")
            group = ".".join(parts[:2]) + ".*" if len(parts) > 2 else key
        counts[group] = counts.get(group, 0) + 1
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def config_overrides(depth: int, root: str = "model", detector: str = "faster_rcnn") -> List[str]:
    """The ``key=value`` overrides a detector's LazyConfig needs to use a converted
    torchvision-style ResNet: RGB input (the detector and its loaders), ImageNet mean and std,
    the stride in the 3x3 conv, and the depth when it is not 50.

    Each override names a node the configs of ``detector`` already have, so that it applies and
    the config builds (the configs of :data:`CONVERTIBLE`; their own values, already right for DETR,
    are restated).

    Args:
        depth: the ResNet's depth (:attr:`Conversion.depth`).
        root: the detector's config node: ``model`` in a fine-tune config, ``model.detector`` in a
            pre-training one (which has no test loader).
        detector: a :data:`CONVERTIBLE` name: where its ResNet is and whether it takes
            ``input_format`` (:data:`FAMILIES`).

    Returns:
        The overrides, in the form of ``train_net.py``'s command line.
    """
    fam = family_of(detector)
    mean, std = (f"[{','.join(f'{v:g}' for v in x)}]" for x in (PIXEL_MEAN, PIXEL_STD))
    stages = f"{root}.{fam.resnet}.stages"
    out = [f"{root}.input_format=RGB"] if fam.input_format else []
    out += [f"{root}.pixel_mean={mean}", f"{root}.pixel_std={std}"]
    out.append(f"{stages}.stride_in_1x1=False")
    if depth != 50:
        out.append(f"{stages}.depth={depth}")
    out.append("dataloader.train.mapper.image_format=RGB")
    if root == "model":
        out.append("dataloader.test.mapper.image_format=RGB")
    return out


def load_backbone_checkpoint(path: str) -> Mapping[str, Any]:
    """Loads a checkpoint file onto the CPU (``.pth``, ``.pth.tar``, ``.pt``, or a ``.pkl`` of
    arrays)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    if path.endswith(".pkl"):
        with open(path, "rb") as f:
            data = pickle.load(f, encoding="latin1")
        data = data.get("model", data) if isinstance(data, dict) else data
        data = {k: torch.as_tensor(v) if hasattr(v, "shape") else v for k, v in data.items()}
    else:
        # Self-supervised checkpoints keep their training arguments (argparse.Namespace) beside
        # the weights, which weights_only loading refuses.
        data = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(data, Mapping):
        raise BackboneConversionError(f"{path}: not a checkpoint dict ({type(data).__name__})")
    return data


def write_converted(conv: Conversion, path: str, prefix: str = "backbone.bottom_up.") -> None:
    """Writes a conversion for Detectron2's checkpointer.

    Args:
        conv: the conversion.
        path: ``.pkl``: Detectron2's model-zoo format (arrays, ``matching_heuristics``), whose
            ResNet keys Detectron2 matches by suffix into any model, the pre-training pair
            included. ``.pth``: a plain checkpoint whose keys carry ``prefix``, which Detectron2
            loads by exact name.
        prefix: the ResNet's key prefix in the detector that loads a ``.pth``
            (:attr:`Family.prefix`): ``backbone.bottom_up.`` for the FPN detectors,
            ``backbone.`` for DETR.

    Raises:
        ValueError: ``path`` ends in neither ``.pkl`` nor ``.pth``.
    """
    author = f"{CONVERTED_AUTHOR} ({conv.layout.name}, ResNet-{conv.depth})"
    if path.endswith(".pkl"):
        model = {k: v.numpy() for k, v in conv.state.items()}
        with open(path, "wb") as f:
            pickle.dump({"model": model, "__author__": author, "matching_heuristics": True}, f)
    elif path.endswith(".pth"):
        torch.save(
            {"model": {prefix + k: v for k, v in conv.state.items()}, "__author__": author}, path
        )
    else:
        raise ValueError(f"{path}: the output must end in .pkl or .pth")
