"""Fine-tuning and evaluation: the evaluators, the end-to-end chain on real images, bad input."""

import json

import numpy as np
import pytest
import torch
from conftest import (
    COCO64,
    CONFIGS,
    Args,
    small_finetune_cfg,
    small_pretrain_cfg,
    write_subset_json,
)
from detectron2.config import LazyCall as L
from detectron2.config import LazyConfig, instantiate
from detectron2.data import DatasetCatalog
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from aligndet_d2.checkpoint.export import export_checkpoint
from aligndet_d2.data import ProposalsError, register_coco, register_proposals
from aligndet_d2.engine.train_loop import check_datasets, do_train
from aligndet_d2.evaluation import ClassAgnosticCOCOEvaluator


def _gt_as_predictions(dataset, wrong_class=False):
    # Dataset dicts hold contiguous class ids and XYWH boxes.
    outs = []
    for d in DatasetCatalog.get(dataset):
        inst = Instances((d["height"], d["width"]))
        boxes = [a["bbox"] for a in d["annotations"]]
        xyxy = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in boxes]).reshape(-1, 4)
        inst.pred_boxes = Boxes(xyxy)
        inst.scores = torch.ones(len(boxes))
        cls = torch.tensor([a["category_id"] for a in d["annotations"]], dtype=torch.int64)
        inst.pred_classes = (cls + 1) % 80 if wrong_class else cls
        outs.append(({"image_id": d["image_id"]}, {"instances": inst}))
    return outs


def test_class_agnostic_ap_by_construction():
    from detectron2.evaluation import COCOEvaluator

    name = register_coco("coco64_val", str(COCO64 / "annotations/val.json"), str(COCO64 / "images"))
    for wrong, ap80 in ((False, 100.0), (True, 0.0)):
        per_class = COCOEvaluator(name, tasks=("bbox",), distributed=False)
        agnostic = ClassAgnosticCOCOEvaluator(name, distributed=False)
        for ev in (per_class, agnostic):
            ev.reset()
            for inp, out in _gt_as_predictions(name, wrong):
                ev.process([inp], [out])
        assert per_class.evaluate()["bbox"]["AP"] == pytest.approx(ap80, abs=1e-6)
        # Classes do not matter to the class-agnostic AP: the boxes are the ground truth.
        assert agnostic.evaluate()["bbox_agnostic"]["AP"] == pytest.approx(100.0, abs=1e-6)


def test_end_to_end_pretrain_export_finetune_evaluate(tmp_path):
    pre = small_pretrain_cfg(tmp_path / "pre", max_iter=4)
    do_train(Args(), pre)
    exported = tmp_path / "exported.pth"
    export_checkpoint(str(tmp_path / "pre" / "model_final.pth"), str(exported))

    val8 = tmp_path / "val8.json"
    write_subset_json(str(COCO64 / "annotations/val.json"), val8, 8)
    ft = small_finetune_cfg(
        tmp_path / "ft",
        max_iter=12,
        # After 12 steps scores are low: keep every detection so that AP is computed.
        extra=[
            f"train.init_checkpoint={exported}",
            "model.roi_heads.box_predictor.test_score_thresh=0.0",
        ],
    )
    ft.dataloader.test.dataset.names = L(register_coco)(
        name="coco64_val8", json_file=str(val8), image_root=str(COCO64 / "images")
    )
    np.random.seed(0)
    torch.manual_seed(0)
    do_train(Args(), ft)
    metrics = [json.loads(line) for line in open(tmp_path / "ft" / "metrics.json")]
    losses = [m["total_loss"] for m in metrics if "total_loss" in m]
    assert np.mean(losses[-4:]) < np.mean(losses[:4])
    # The final evaluation ran Detectron2's COCO evaluator and the class-agnostic one.
    results = json.loads((tmp_path / "ft" / "eval_results.json").read_text())
    for key in ("bbox", "bbox_agnostic"):
        assert 0.0 <= results[key]["AP"] <= 100.0 and "AP50" in results[key]
    assert "AP-person" in results["bbox"]


def test_proposals_dataset_is_refused_for_finetuning(tmp_path):
    props = tmp_path / "p.json"
    props.write_text(
        json.dumps(
            {"images": [], "annotations": [], "categories": [{"id": 1, "name": "selective_search"}]}
        )
    )
    with pytest.raises(
        ProposalsError, match="a proposals json has no labels; it is for pre-training"
    ):
        register_coco("test_props_ft", str(props), str(tmp_path))
    register_proposals("test_props_registered", str(props), str(tmp_path))
    cfg = small_finetune_cfg(tmp_path)
    cfg.dataloader.train.dataset.names = "test_props_registered"
    with pytest.raises(ProposalsError, match="'test_props_registered' is a proposals dataset"):
        check_datasets(cfg)


def test_mask_rcnn_loads_the_export_and_trains_on_synthetic_masks(tmp_path):
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.structures import BitMasks

    pre = instantiate(LazyConfig.load(str(CONFIGS / "pretrain_box_faster_rcnn_cpu.py")).model)
    torch.save({"model": pre.state_dict()}, tmp_path / "pre.pth")
    export_checkpoint(str(tmp_path / "pre.pth"), str(tmp_path / "exp.pth"))
    cfg = LazyConfig.load(str(CONFIGS / "finetune_mask_rcnn_cpu.py"))
    model = instantiate(cfg.model)
    from aligndet_d2.engine.train_loop import check_init_checkpoint

    table = check_init_checkpoint(model, str(tmp_path / "exp.pth"))
    assert "mask head" in table
    DetectionCheckpointer(model).load(str(tmp_path / "exp.pth"))
    torch.testing.assert_close(
        model.roi_heads.box_head.fc1.weight, pre.online.roi_heads.box_head.fc1.weight
    )
    # Two steps on synthetic images whose masks fill their boxes.
    batch = []
    for i in range(2):
        inst = Instances((192, 256))
        inst.gt_boxes = Boxes(torch.tensor([[20.0, 30, 120, 150], [130, 40, 240, 180]]))
        inst.gt_classes = torch.tensor([0, 17 + i])
        masks = torch.zeros(2, 192, 256, dtype=torch.bool)
        masks[0, 30:150, 20:120] = True
        masks[1, 40:180, 130:240] = True
        inst.gt_masks = BitMasks(masks)
        batch.append(
            {"image": torch.randint(0, 255, (3, 192, 256), dtype=torch.uint8), "instances": inst}
        )
    cfg.optimizer.params.model = model
    opt = instantiate(cfg.optimizer)
    model.train()
    with EventStorage():
        for _ in range(2):
            losses = model(batch)
            assert "loss_mask" in losses and all(torch.isfinite(v) for v in losses.values())
            opt.zero_grad()
            sum(losses.values()).backward()
            opt.step()


def test_eval_only_on_a_pretraining_config_is_refused(tmp_path):
    from aligndet_d2.engine.train_loop import main

    args = Args(eval_only=True)
    args.config_file = str(CONFIGS / "pretrain_box_faster_rcnn_cpu.py")
    args.opts = [f"train.output_dir={tmp_path}", "train.device=cpu"]
    with pytest.raises(ValueError, match="--eval-only on a pre-training config"):
        main(args)


def _supervised_step_under_autocast(cfg):
    """AMPTrainer's step (forward under autocast, backward outside) on the CPU in bfloat16."""
    torch.manual_seed(0)
    model = instantiate(cfg.model).train()
    batch = next(iter(instantiate(cfg.dataloader.train)))
    cfg.optimizer.params.model = model
    opt = instantiate(cfg.optimizer)
    with EventStorage():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            losses = model(batch)
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
    return losses, model


@pytest.mark.parametrize("det", ["faster_rcnn", "retinanet", "fcos"])
def test_a_supervised_step_under_bfloat16_autocast(det, tmp_path):
    losses, model = _supervised_step_under_autocast(small_finetune_cfg(tmp_path, detector=det))
    assert all(torch.isfinite(v) for v in losses.values()), losses
    assert all(torch.isfinite(p).all() for p in model.parameters())
    if det == "fcos":  # the GIoU loss must have run in float32 (modeling/fcos.py)
        assert losses["loss_fcos_loc"].dtype == torch.float32


def test_detectron2s_own_fcos_fails_under_autocast(tmp_path):
    """What AMPSafeFCOS fixes: the stock FCOS's GIoU loss mixes half and float32 boxes."""
    from detectron2.modeling.meta_arch import FCOS

    cfg = small_finetune_cfg(tmp_path, detector="fcos")
    cfg.model._target_ = FCOS
    with pytest.raises(RuntimeError, match="dtypes match"):
        _supervised_step_under_autocast(cfg)
