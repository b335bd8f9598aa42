"""The detector table: per detector, its configs per setting and variant, what its pre-training
needs and what its export can switch. Every caller looks a detector's facts up here instead of
spelling config paths or testing detector names.

Settings: ``paper`` (the paper's R-50 configs, COCO), ``cpu`` (the CPU-sized configs on the bundled
coco64), ``voc`` (the paper's VOC transfer), ``voc_cpu`` (the CPU configs on a VOC 2007 low-data
split). Variants: ``frozen`` (Proper Reuse's frozen backbone, optional adapters), ``wide`` (its
capacity), ``frozen_wide``, ``frozen_wide_lsj``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Tuple

__all__ = ["DETECTORS", "Detector", "get_detector"]

# (stage, setting, variant): stage is "pretrain" or "finetune"; variant "" is the plain config.
ConfigKey = Tuple[str, str, str]


@dataclass(frozen=True)
class Detector:
    """What the pipeline needs to know of one detector.

    Attributes:
        name: the name in config file names and on the command lines (``faster_rcnn``).
        configs: (stage, setting, variant) -> config path relative to the repository root.
        has_rpn: the export can drop a pre-trained RPN (``tools/export.py --drop-rpn``).
        keep_reg: fine-tune overrides a kept pre-trained box-regression layer needs (the
            pre-trained one is class-agnostic; the dense heads' regressors are so already).
        num_classes_keys: the fine-tune config keys that hold the number of classes.
        cluster_settings: for a detector that pre-trains on clustered proposals (DETR), the
            ``ClusterSettings`` fields (other than the number of clusters) its CPU pre-training
            config reads them with; None for the others.
    """

    name: str
    configs: Mapping[ConfigKey, str]
    has_rpn: bool = False
    keep_reg: Tuple[str, ...] = ()
    num_classes_keys: Tuple[str, ...] = ("model.num_classes",)
    cluster_settings: Optional[Mapping[str, int]] = field(default=None)

    def config(self, stage: str, setting: str, variant: str = "") -> str:
        """The config path of ``stage`` ("pretrain" / "finetune") in ``setting``; a clear error
        naming the ones that exist when there is none."""
        path = self.configs.get((stage, setting, variant))
        if path is None:
            have = sorted(v or "(none)" for s, t, v in self.configs if (s, t) == (stage, setting))
            raise KeyError(
                f"{self.name} has no {stage} config for setting {setting!r} with variant "
                f"{variant!r}; its variants there: {have}"
            )
        return path

    def variants(self, stage: str, setting: str) -> List[str]:
        """The variants ("" for the plain config) of ``stage`` in ``setting``."""
        return sorted(v for s, t, v in self.configs if (s, t) == (stage, setting))

    @property
    def needs_clusters(self) -> bool:
        """Whether pre-training reads proposals clustered into pseudo-classes."""
        return self.cluster_settings is not None


def _table(*rows: Tuple[str, str, str, str]) -> Dict[ConfigKey, str]:
    return {(stage, setting, variant): path for stage, setting, variant, path in rows}


_R_CNN_KEEP_REG = ("model.roi_heads.box_predictor.cls_agnostic_bbox_reg=True",)
_R_CNN_CLASSES = ("model.roi_heads.num_classes",)
_DENSE_CLASSES = ("model.num_classes", "model.head.num_classes")

DETECTORS: Dict[str, Detector] = {
    d.name: d
    for d in (
        Detector(
            name="faster_rcnn",
            configs=_table(
                ("pretrain", "paper", "", "configs/pretrain_box_faster_rcnn.py"),
                ("pretrain", "paper", "wide", "configs/pretrain_box_faster_rcnn_wide.py"),
                ("pretrain", "cpu", "", "configs/pretrain_box_faster_rcnn_cpu.py"),
                ("pretrain", "cpu", "wide", "configs/pretrain_box_faster_rcnn_wide_cpu.py"),
                ("finetune", "paper", "", "configs/finetune_faster_rcnn.py"),
                ("finetune", "paper", "frozen", "configs/finetune_faster_rcnn_frozen.py"),
                ("finetune", "paper", "frozen_wide", "configs/finetune_faster_rcnn_frozen_wide.py"),
                (
                    "finetune",
                    "paper",
                    "frozen_wide_lsj",
                    "configs/finetune_faster_rcnn_frozen_wide_lsj.py",
                ),
                ("finetune", "cpu", "", "configs/finetune_faster_rcnn_cpu.py"),
                ("finetune", "cpu", "frozen", "configs/finetune_faster_rcnn_frozen_cpu.py"),
                ("finetune", "voc", "", "configs/finetune_faster_rcnn_voc.py"),
                ("finetune", "voc_cpu", "", "configs/finetune_faster_rcnn_voc_cpu.py"),
                ("finetune", "voc_cpu", "frozen", "configs/finetune_faster_rcnn_frozen_voc_cpu.py"),
                (
                    "finetune",
                    "voc_cpu",
                    "frozen_wide",
                    "configs/finetune_faster_rcnn_frozen_wide_voc_cpu.py",
                ),
            ),
            has_rpn=True,
            keep_reg=_R_CNN_KEEP_REG,
            num_classes_keys=_R_CNN_CLASSES,
        ),
        Detector(
            name="retinanet",
            configs=_table(
                ("pretrain", "paper", "", "configs/pretrain_box_retinanet.py"),
                ("pretrain", "cpu", "", "configs/pretrain_box_retinanet_cpu.py"),
                ("finetune", "paper", "", "configs/finetune_retinanet.py"),
                ("finetune", "paper", "frozen", "configs/finetune_retinanet_frozen.py"),
                ("finetune", "cpu", "", "configs/finetune_retinanet_cpu.py"),
                ("finetune", "cpu", "frozen", "configs/finetune_retinanet_frozen_cpu.py"),
                ("finetune", "voc", "", "configs/finetune_retinanet_voc.py"),
                ("finetune", "voc_cpu", "", "configs/finetune_retinanet_voc_cpu.py"),
                ("finetune", "voc_cpu", "frozen", "configs/finetune_retinanet_frozen_voc_cpu.py"),
            ),
            num_classes_keys=_DENSE_CLASSES,
        ),
        Detector(
            name="fcos",
            configs=_table(
                ("pretrain", "paper", "", "configs/pretrain_box_fcos.py"),
                ("pretrain", "cpu", "", "configs/pretrain_box_fcos_cpu.py"),
                ("finetune", "paper", "", "configs/finetune_fcos.py"),
                ("finetune", "paper", "frozen", "configs/finetune_fcos_frozen.py"),
                ("finetune", "cpu", "", "configs/finetune_fcos_cpu.py"),
                ("finetune", "cpu", "frozen", "configs/finetune_fcos_frozen_cpu.py"),
                ("finetune", "voc", "", "configs/finetune_fcos_voc.py"),
                ("finetune", "voc_cpu", "", "configs/finetune_fcos_voc_cpu.py"),
                ("finetune", "voc_cpu", "frozen", "configs/finetune_fcos_frozen_voc_cpu.py"),
            ),
            num_classes_keys=_DENSE_CLASSES,
        ),
        Detector(
            name="cascade_rcnn",
            configs=_table(
                ("pretrain", "paper", "", "configs/pretrain_box_cascade_rcnn.py"),
                ("pretrain", "cpu", "", "configs/pretrain_box_cascade_rcnn_cpu.py"),
                ("finetune", "paper", "", "configs/finetune_cascade_rcnn.py"),
                ("finetune", "paper", "frozen", "configs/finetune_cascade_rcnn_frozen.py"),
                ("finetune", "cpu", "", "configs/finetune_cascade_rcnn_cpu.py"),
                ("finetune", "voc_cpu", "", "configs/finetune_cascade_rcnn_voc_cpu.py"),
                (
                    "finetune",
                    "voc_cpu",
                    "frozen",
                    "configs/finetune_cascade_rcnn_frozen_voc_cpu.py",
                ),
            ),
            has_rpn=True,
            num_classes_keys=_R_CNN_CLASSES,
        ),
        Detector(
            name="detr",
            configs=_table(
                ("pretrain", "paper", "", "configs/pretrain_box_detr.py"),
                ("pretrain", "cpu", "", "configs/pretrain_box_detr_cpu.py"),
                ("finetune", "paper", "", "configs/finetune_detr.py"),
                ("finetune", "cpu", "", "configs/finetune_detr_cpu.py"),
                ("finetune", "voc_cpu", "", "configs/finetune_detr_voc_cpu.py"),
            ),
            # pretrain_box_detr_cpu.py reads the first 20 proposals per image at short side 320.
            cluster_settings={"max_proposals": 20, "short_edge": 320, "max_size": 533},
        ),
    )
}


def get_detector(name: str) -> Detector:
    """The table's row of ``name``; a clear error naming the known detectors otherwise."""
    if name not in DETECTORS:
        raise KeyError(f"unknown detector {name!r}; known: {list(DETECTORS)}")
    return DETECTORS[name]
