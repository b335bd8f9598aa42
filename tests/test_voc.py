"""Pascal VOC: the VOC folder helpers, the VOC evaluator beside the COCO ones, and the VOC configs
loading a few real images, training and evaluating on CPU."""

import json
import os
from pathlib import Path

import pytest
import torch
from conftest import CONFIGS, REPO, Args
from detectron2.config import LazyConfig, instantiate
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import inference_on_dataset
from detectron2.structures import Boxes, Instances

from aligndet_d2.data.splits import write_low_data_splits
from aligndet_d2.data.voc import VOCError, read_voc_split, register_voc, voc_subset
from aligndet_d2.engine.train_loop import do_train

VOC = Path(os.environ.get("ALIGNDET_VOC2007", REPO.parent / "shared" / "data" / "voc2007"))
TESTED = ("faster_rcnn", "retinanet", "fcos")


@pytest.fixture(scope="module")
def voc():
    if not (VOC / "VOC2007" / "ImageSets" / "Main" / "val.txt").exists():
        pytest.skip(f"voc2007 not found at {VOC} (set ALIGNDET_VOC2007)")
    return VOC


def test_subset_and_register(voc, tmp_path):
    ids = read_voc_split(str(voc / "VOC2007"), "val")
    assert len(ids) == 2510 and ids[0] == "000005"
    sub = voc_subset(str(voc / "VOC2007"), str(tmp_path / "VOC2007"), "val6", ids[:6])
    assert voc_subset(str(voc / "VOC2007"), sub, "val6", ids[:6]) == sub  # again: unchanged
    with pytest.raises(VOCError, match="exists with other images"):
        voc_subset(str(voc / "VOC2007"), sub, "val6", ids[1:7])
    name = register_voc("test_voc_val6", sub, "val6", coco_cache_dir=str(tmp_path / "cache"))
    dicts = DatasetCatalog.get(name)
    assert [d["image_id"] for d in dicts] == ids[:6]
    coco = json.loads(Path(MetadataCatalog.get(name).json_file).read_text())
    assert len(coco["images"]) == 6
    assert len(coco["annotations"]) == sum(len(d["annotations"]) for d in dicts)
    with pytest.raises(VOCError, match="no such VOC split file"):
        register_voc("test_voc_nosplit", sub, "nosuchsplit")
    with pytest.raises(VOCError, match="no annotation file"):
        voc_subset(str(voc / "VOC2007"), str(tmp_path / "x"), "val", ["nosuchimage"])


class _GroundTruth(torch.nn.Module):
    """Predicts each image's ground truth (score 1): every evaluator must give AP 100."""

    def __init__(self, dicts):
        super().__init__()
        self.by_id = {d["image_id"]: d for d in dicts}

    def forward(self, inputs):
        out = []
        for x in inputs:
            d = self.by_id[x["image_id"]]
            inst = Instances((d["height"], d["width"]))
            inst.pred_boxes = Boxes(torch.tensor([a["bbox"] for a in d["annotations"]]))
            inst.scores = torch.ones(len(d["annotations"]))
            inst.pred_classes = torch.tensor([a["category_id"] for a in d["annotations"]])
            out.append({"instances": inst})
        return out


def test_evaluators_score_ground_truth_100(voc, tmp_path):
    """VOC's evaluator (difficult ignored), COCO's and the class-agnostic one run side by side on
    a VOC split and agree that the ground truth is perfect."""
    cfg = LazyConfig.load(str(CONFIGS / "finetune_faster_rcnn_voc_cpu.py"))
    # VOC's mean is over its 20 classes (a class absent from the images scores 0): for each class
    # the first val image that shows it not marked difficult.
    val = json.loads((voc / "annotations" / "val.json").read_text())
    first = {}
    for a in val["annotations"]:
        if not a["difficult"]:
            first.setdefault(a["category_id"], a["image_id"])
    ids = sorted({f"{i:06d}" for i in first.values()})
    assert len(first) == 20
    sub = voc_subset(str(voc / "VOC2007"), str(tmp_path / "VOC2007"), "valcls", ids)
    cfg.dataloader.test.dataset.names.update(
        name="test_voc_gt", dirname=sub, split="valcls", coco_cache_dir=str(tmp_path / "cache")
    )
    cfg.dataloader.test.num_workers = 0
    # AP by class frequency bins the classes by the training json's image counts.
    cfg.dataloader.train.dataset.names.json_file = str(voc / "annotations" / "train.json")
    loader = instantiate(cfg.dataloader.test)
    res = inference_on_dataset(
        _GroundTruth(DatasetCatalog.get("test_voc_gt")),
        loader,
        instantiate(cfg.dataloader.evaluator),
    )
    assert set(res) == {"bbox_voc", "bbox", "bbox_agnostic", "bbox_by_frequency"}
    assert res["bbox_voc"]["AP50"] == pytest.approx(100.0)
    assert res["bbox"]["AP"] == pytest.approx(100.0)
    assert res["bbox_agnostic"]["AP"] == pytest.approx(100.0)
    freq = res["bbox_by_frequency"]
    assert sum(freq[f"classes_{b}"] for b in ("rare", "common", "frequent")) == 20
    for b in ("rare", "common", "frequent"):
        assert freq[f"classes_{b}"] == 0 or freq[f"AP_{b}"] == pytest.approx(100.0)


def test_paper_voc_settings():
    for det in TESTED:
        cfg = LazyConfig.load(str(CONFIGS / f"finetune_{det}_voc.py"))
        assert cfg.dataloader.train.dataset.names == ("voc_2007_trainval", "voc_2012_trainval")
        assert cfg.dataloader.test.dataset.names.split == "test"
        assert cfg.dataloader.train.total_batch_size == 16 and cfg.train.max_iter == 12000
        sizes = cfg.dataloader.train.mapper.augmentations[0].short_edge_length
        assert min(sizes) == 480 and max(sizes) == 800
        lr = instantiate(cfg.lr_multiplier)
        assert lr(8999 / 12000) == pytest.approx(1.0) and lr(9001 / 12000) == pytest.approx(0.1)
        assert lr(11001 / 12000) == pytest.approx(0.01)
        base = LazyConfig.load(str(CONFIGS / f"finetune_{det}.py"))
        assert (
            cfg.optimizer.lr == base.optimizer.lr
            and cfg.optimizer.weight_decay == pytest.approx(5e-5)
        )
        model = cfg.model
        n = model.roi_heads.num_classes if "roi_heads" in model else model.head.num_classes
        assert n == 20


@pytest.mark.parametrize("det", TESTED)
def test_voc_cpu_config_trains_and_evaluates(det, voc, tmp_path):
    """Each CPU VOC config on a low-data split of 4 real VOC train images: 2 steps, then the VOC,
    COCO, class-agnostic and class-frequency evaluators on 4 real val images."""
    train_json = tmp_path / "train.json"
    full = json.loads((voc / "annotations" / "train.json").read_text())
    ids = {im["id"] for im in full["images"][:40]}
    full["images"] = full["images"][:40]
    full["annotations"] = [a for a in full["annotations"] if a["image_id"] in ids]
    train_json.write_text(json.dumps(full))
    split = write_low_data_splits(str(train_json), str(tmp_path / "splits"), [10], [1])[0]
    val = voc_subset(
        str(voc / "VOC2007"),
        str(tmp_path / "VOC2007"),
        "val4",
        read_voc_split(str(voc / "VOC2007"), "val")[:4],
    )
    cfg = LazyConfig.load(str(CONFIGS / f"finetune_{det}_voc_cpu.py"))
    cfg = LazyConfig.apply_overrides(
        cfg,
        [
            f"dataloader.train.dataset.names.name=test_voc_{det}_train4",
            f"dataloader.train.dataset.names.json_file={split['labeled_file']}",
            f"dataloader.train.dataset.names.image_root={voc / 'VOC2007' / 'JPEGImages'}",
            f"dataloader.test.dataset.names.name=test_voc_{det}_val4",
            f"dataloader.test.dataset.names.dirname={val}",
            "dataloader.test.dataset.names.split=val4",
            f"dataloader.test.dataset.names.coco_cache_dir={tmp_path / 'cache'}",
            "dataloader.train.num_workers=0",
            "dataloader.test.num_workers=0",
            f"train.output_dir={tmp_path / 'out'}",
            "train.max_iter=2",
            "train.eval_period=2",
            "train.device=cpu",
            # After 2 steps every score is near the prior; keep them so that AP is computed.
            (
                "model.roi_heads.box_predictor.test_score_thresh=0.0"
                if det == "faster_rcnn"
                else "model.test_score_thresh=0.0"
            ),
        ],
    )
    do_train(Args(), cfg)
    res = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    assert set(res) == {"bbox_voc", "bbox", "bbox_agnostic", "bbox_by_frequency"}
    for key in ("bbox_voc", "bbox", "bbox_agnostic"):
        assert 0.0 <= res[key]["AP50"] <= 100.0
    # The 4 labeled images contain a few classes: the others are rare (no training image).
    freq = res["bbox_by_frequency"]
    assert freq["classes_rare"] == 20 and freq["classes_common"] == freq["classes_frequent"] == 0
