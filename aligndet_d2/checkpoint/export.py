"""Export of a pre-training checkpoint to a plain Detectron2 checkpoint, and the key report.

The export keeps the online detector only and drops its projection layers; the RPN is kept whole
unless asked to drop it (an ablation: the RPN learns to propose selective-search-like boxes). The
last box-regression layers (R-CNN ``roi_heads.box_predictor.bbox_pred``, RetinaNet / FCOS
``head.bbox_pred`` and FCOS ``head.ctrness``) are dropped by default, as the reference does, or kept
(docs/DESIGN.md 2.6). A kept R-CNN regressor is class-agnostic: it loads only into a fine-tune
config with ``cls_agnostic_bbox_reg=True``.
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from ..modeling.backbones.adapters import is_adapter_key

__all__ = [
    "EXPORT_MARKER",
    "MODULES",
    "ExportMismatchError",
    "export_state_dict",
    "export_checkpoint",
    "write_export",
    "key_report",
    "format_report",
    "check_report",
    "load_checkpoint_file",
]

# Key of the export's metadata in the written file; train_net.py checks exports that carry it.
EXPORT_MARKER = "aligndet_export"

# Modules of the per-module report, first matching prefix wins (the FPN is everything in the
# backbone but its bottom-up network).
MODULES: Sequence[Tuple[str, Tuple[str, ...]]] = (
    ("backbone", ("backbone.bottom_up.",)),
    ("FPN", ("backbone.fpn_", "backbone.top_block.")),
    # A backbone without FPN (DETR's): everything else under backbone.
    ("backbone", ("backbone.",)),
    ("RPN", ("proposal_generator.",)),
    ("box head", ("roi_heads.box_head.", "roi_heads.box_pooler.")),
    ("predictor", ("roi_heads.box_predictor.",)),
    ("mask head", ("roi_heads.mask_head.", "roi_heads.mask_pooler.")),
    ("dense towers", ("head.cls_subnet.", "head.bbox_subnet.", "head.share_tower.")),
    ("dense predictor", ("head.",)),
    ("transformer", ("transformer.", "input_proj.", "query_embed.")),
    ("DETR heads", ("class_embed.", "bbox_embed.")),
)
# Modules whose every key must transfer when the detector and backbone match; the others
# (predictors, mask head, the backbone's residual adapters: an export has none, fine-tuning starts
# them at zero) are expected to start, at least in part, from random init.
_MUST_TRANSFER = ("backbone", "FPN", "RPN", "box head", "dense towers", "transformer")

# Layers that only pre-training has (matched anywhere in the key, also at its start), and DETR's
# classifier over the pre-training's clusters.
_PROJECTION = (".projector.",)
_CLUSTER_CLASSIFIER = ("class_embed.",)
# The last box-regression layers (kept or dropped by the switch); DETR's is its box MLP's last
# linear layer.
_REGRESSION = (
    "roi_heads.box_predictor.bbox_pred.",
    "head.bbox_pred.",
    "head.ctrness.",
    "bbox_embed.4.",
)
_RPN = "proposal_generator."
# Cascade R-CNN: one predictor per stage, roi_heads.box_predictor.<stage>.bbox_pred.
_STAGE = re.compile(r"^roi_heads\.box_predictor\.\d+\.")


def _is_regression(key: str) -> bool:
    """Whether ``key`` is a last box-regression layer (a cascade stage's as the R-CNN one)."""
    return _STAGE.sub("roi_heads.box_predictor.", key, count=1).startswith(_REGRESSION)


class ExportMismatchError(ValueError):
    """The exported weights do not fit the fine-tune config (another detector or backbone)."""


def module_of(key: str) -> str:
    """The report module of a state-dict key (residual adapters of the backbone: "adapters")."""
    if key.startswith("backbone.") and is_adapter_key(key):
        return "adapters"
    for name, prefixes in MODULES:
        if key.startswith(prefixes):
            return name
    return "other"


def load_checkpoint_file(path: str) -> Dict[str, Any]:
    """Loads a Detectron2 ``.pth`` checkpoint (a dict with ``model``) onto the CPU."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise ValueError(f"{path}: not a Detectron2 checkpoint (no 'model' entry)")
    return ckpt


def export_state_dict(
    pretrain_state: Dict[str, torch.Tensor],
    keep_box_regression: bool = False,
    drop_rpn: bool = False,
) -> Tuple["OrderedDict[str, torch.Tensor]", List[str]]:
    """The online detector's weights without the pre-training-only layers.

    Args:
        pretrain_state: state dict of a :class:`~aligndet_d2.modeling.MomentumPair`.
        keep_box_regression: keep the last box-regression layers.
        drop_rpn: drop the RPN (R-CNN ``proposal_generator.*``), which then starts from random
            init in fine-tuning.

    Returns:
        (plain detector state dict, dropped keys).
    """
    online = [k for k in pretrain_state if k.startswith("online.")]
    if not online:
        raise ValueError(
            "not a pre-training checkpoint: no 'online.*' keys (is it already exported?)"
        )
    if drop_rpn and not any(k.startswith("online." + _RPN) for k in online):
        raise ValueError("drop_rpn: this detector has no RPN (only R-CNN detectors have one)")
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    dropped = []
    for k in online:
        key = k[len("online.") :]
        if (
            any(p in "." + key for p in _PROJECTION)
            or key.startswith(_CLUSTER_CLASSIFIER)
            or (not keep_box_regression and _is_regression(key))
            or (drop_rpn and key.startswith(_RPN))
        ):
            dropped.append(key)
        else:
            out[key] = pretrain_state[k]
    return out, dropped


def write_export(
    state: Dict[str, torch.Tensor],
    dropped: Sequence[str],
    output: str,
    *,
    source: str,
    iteration: Optional[int] = None,
    keep_box_regression: bool = False,
    drop_rpn: bool = False,
) -> None:
    """Saves an exported state dict as a Detectron2 checkpoint that records its export."""
    meta = {
        "source": os.path.basename(source),
        "iteration": iteration,
        "keep_box_regression": keep_box_regression,
        "drop_rpn": drop_rpn,
        "dropped": list(dropped),
    }
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    torch.save(
        {
            "model": state,
            "__author__": "aligndet_d2",
            "matching_heuristics": False,
            EXPORT_MARKER: meta,
        },
        output,
    )


def export_checkpoint(
    checkpoint: str, output: str, keep_box_regression: bool = False, drop_rpn: bool = False
) -> Tuple["OrderedDict[str, torch.Tensor]", List[str]]:
    """Writes the plain Detectron2 checkpoint of a pre-training checkpoint's online detector.

    Returns:
        (exported state dict, dropped keys).
    """
    ckpt = load_checkpoint_file(checkpoint)
    state, dropped = export_state_dict(ckpt["model"], keep_box_regression, drop_rpn)
    write_export(
        state,
        dropped,
        output,
        source=checkpoint,
        iteration=ckpt.get("iteration"),
        keep_box_regression=keep_box_regression,
        drop_rpn=drop_rpn,
    )
    return state, dropped


def key_report(
    exported: Dict[str, torch.Tensor],
    model_state: Dict[str, torch.Tensor],
    dropped: Sequence[str] = (),
) -> "OrderedDict[str, Dict[str, List[str]]]":
    """Per module, which keys transfer, were dropped at export, start from random init, or mismatch.

    Args:
        exported: the exported state dict.
        model_state: state dict of the fine-tune model.
        dropped: keys the export dropped.

    Returns:
        module -> ``{"transferred", "dropped", "random_init", "mismatched"}`` lists of keys;
        "mismatched" holds keys of the export that the model lacks or has with another shape.
    """
    report: "OrderedDict[str, Dict[str, List[str]]]" = OrderedDict()

    def row(key):
        m = module_of(key)
        if m not in report:
            report[m] = {"transferred": [], "dropped": [], "random_init": [], "mismatched": []}
        return report[m]

    for k, v in exported.items():
        if k in model_state and tuple(model_state[k].shape) == tuple(v.shape):
            row(k)["transferred"].append(k)
        else:
            row(k)["mismatched"].append(k)
    for k in dropped:
        row(k)["dropped"].append(k)
    for k in model_state:
        if k not in exported:
            row(k)["random_init"].append(k)
    order = list(dict.fromkeys(name for name, _ in MODULES)) + ["other"]
    order.insert(1, "adapters")
    return OrderedDict(sorted(report.items(), key=lambda kv: order.index(kv[0])))


def check_report(report: Dict[str, Dict[str, List[str]]]) -> None:
    """Raises :class:`ExportMismatchError` listing the modules whose weights do not fit.

    A module mismatches when an exported key is missing from the model or has another shape, or
    when a module that must transfer whole (backbone, FPN, RPN, box head, dense towers) was exported
    but some of its model keys are not in the export.
    """
    bad = []
    for module, r in report.items():
        problems = []
        if r["mismatched"]:
            problems.append(
                f"{len(r['mismatched'])} exported keys missing or of another shape "
                f"(first: {r['mismatched'][0]})"
            )
        exported = r["transferred"] or r["mismatched"]
        if module in _MUST_TRANSFER and exported and r["random_init"]:
            problems.append(
                f"{len(r['random_init'])} keys not in the export " f"(first: {r['random_init'][0]})"
            )
        if problems:
            bad.append(f"{module}: " + "; ".join(problems))
    if bad:
        raise ExportMismatchError(
            "the exported weights do not match this config (another detector or backbone?):\n  "
            + "\n  ".join(bad)
        )


def format_report(report: Dict[str, Dict[str, List[str]]]) -> str:
    """The report as a table: module, keys transferred, dropped at export, random init, mismatch."""
    from tabulate import tabulate

    rows = [
        [m, len(r["transferred"]), len(r["dropped"]), len(r["random_init"]), len(r["mismatched"])]
        for m, r in report.items()
    ]
    return tabulate(
        rows,
        headers=["module", "transferred", "dropped at export", "random init", "mismatched"],
        tablefmt="pipe",
    )
