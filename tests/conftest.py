import importlib.util
import json
import os
import shutil
import warnings
from pathlib import Path

import pytest

warnings.filterwarnings("ignore", category=FutureWarning)

REPO = Path(__file__).resolve().parents[1]
COCO64 = REPO / "datasets" / "coco64"
# The full coco256 set lives beside the repository on the development machines and in CI; tests that
# need it skip without it.
COCO256 = Path(os.environ.get("ALIGNDET_COCO256", REPO.parent / "shared" / "data" / "coco256"))


def load_benchmark(name: str):
    """The module of ``benchmarks/<name>.py`` (scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def coco64():
    return {
        "images": str(COCO64 / "images"),
        "train": str(COCO64 / "annotations" / "train.json"),
        "val": str(COCO64 / "annotations" / "val.json"),
    }


@pytest.fixture(scope="session")
def coco256():
    if not (COCO256 / "annotations" / "train.json").exists():
        pytest.skip(f"coco256 not found at {COCO256} (set ALIGNDET_COCO256)")
    return {
        "images": str(COCO256 / "images"),
        "train": str(COCO256 / "annotations" / "train.json"),
        "val": str(COCO256 / "annotations" / "val.json"),
    }


def write_subset_json(src_json: str, dst_json: str, n: int, start: int = 0) -> dict:
    """A COCO json with images [start, start + n) of src_json (and their annotations)."""
    with open(src_json) as f:
        d = json.load(f)
    ims = d["images"][start : start + n]
    ids = {im["id"] for im in ims}
    d["images"] = ims
    d["annotations"] = [a for a in d["annotations"] if a["image_id"] in ids]
    with open(dst_json, "w") as f:
        json.dump(d, f)
    return d


def tiny_dataset(root, **images_per_split):
    """A folder in coco256's layout with the first n coco64 images of each split, e.g.
    ``tiny_dataset(path, train=2, val=2)``."""
    (root / "annotations").mkdir(parents=True)
    (root / "images").mkdir()
    for split, n in images_per_split.items():
        d = write_subset_json(
            str(COCO64 / "annotations" / f"{split}.json"), root / "annotations" / f"{split}.json", n
        )
        for im in d["images"]:
            shutil.copy(COCO64 / "images" / im["file_name"], root / "images")
    return root


CONFIGS = REPO / "configs"


def pretrain_cfg(detector="faster_rcnn", extra=(), short_edge=192, max_size=320):
    """A CPU pre-training config on coco64's ground-truth boxes as proposals, at a small size."""
    from detectron2.config import LazyConfig

    cfg = LazyConfig.load(str(CONFIGS / f"pretrain_box_{detector}_cpu.py"))
    overrides = [
        f"dataloader.train.dataset.json_file={COCO64 / 'annotations' / 'train.json'}",
        f"dataloader.train.dataset.image_root={COCO64 / 'images'}",
        f"dataloader.train.mapper.short_edge_lengths=[{short_edge}]",
        f"dataloader.train.mapper.max_size={max_size}",
        "dataloader.train.num_workers=0",
        *extra,
    ]
    return LazyConfig.apply_overrides(cfg, overrides)


def small_pretrain_cfg(output_dir, max_iter=5, extra=()):
    """The CPU Faster R-CNN pre-training config of :func:`pretrain_cfg`, ready for a trainer."""
    return pretrain_cfg(
        extra=[
            "dataloader.train.mapper.max_proposals=8",
            f"train.output_dir={output_dir}",
            f"train.max_iter={max_iter}",
            "train.log_period=1",
            "train.device=cpu",
            *extra,
        ]
    )


def small_finetune_cfg(output_dir, max_iter=5, extra=(), detector="faster_rcnn"):
    """The CPU fine-tune config on coco64 at a small size."""
    from detectron2.config import LazyConfig

    cfg = LazyConfig.load(str(CONFIGS / f"finetune_{detector}_cpu.py"))
    cfg = LazyConfig.apply_overrides(
        cfg,
        [
            "dataloader.train.num_workers=0",
            "dataloader.test.num_workers=0",
            f"train.output_dir={output_dir}",
            f"train.max_iter={max_iter}",
            "train.log_period=1",
            "train.device=cpu",
            *extra,
        ],
    )
    cfg.dataloader.train.mapper.augmentations[0].short_edge_length = (192,)
    cfg.dataloader.train.mapper.augmentations[0].max_size = 320
    cfg.dataloader.test.mapper.augmentations[0].short_edge_length = 192
    cfg.dataloader.test.mapper.augmentations[0].max_size = 320
    return cfg


class Args:
    """The parsed command line that train_loop functions expect."""

    def __init__(self, resume=False, eval_only=False):
        self.resume = resume
        self.eval_only = eval_only
        self.num_gpus = 1
        self.config_file = ""
        self.opts = []
