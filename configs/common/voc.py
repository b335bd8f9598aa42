# Pascal VOC fine-tuning and evaluation (DESIGN.md 2.7), for any detector config.
#
# Paths follow Detectron2's builtin datasets: the folder in $DETECTRON2_DATASETS (default
# "datasets") holds VOC2007/ and VOC2012/ (VOCdevkit layout, the paper setting) or voc2007/ (the
# CPU-sized set, ../shared/data/voc2007, with its low-data splits beside it in voc2007_splits/).
import os

from detectron2.config import LazyCall as L
from detectron2.data import transforms as T
from detectron2.evaluation import COCOEvaluator, DatasetEvaluators

from aligndet_d2.data import register_coco
from aligndet_d2.data.voc import register_voc
from aligndet_d2.evaluation import ClassAgnosticCOCOEvaluator, VOCDetectionEvaluator

from .data import frequency_evaluator
from .schedule import step_schedule

DATASETS = os.getenv("DETECTRON2_DATASETS", "datasets")
NUM_CLASSES = 20

# VOC's 11-point AP50 (difficult boxes ignored), COCO-style AP (difficult boxes counted) and
# class-agnostic AP, on the same images.
evaluator = L(DatasetEvaluators)(
    evaluators=[
        L(VOCDetectionEvaluator)(dataset_name="${....test.dataset.names}"),
        L(COCOEvaluator)(dataset_name="${....test.dataset.names}", tasks=("bbox",)),
        L(ClassAgnosticCOCOEvaluator)(dataset_name="${....test.dataset.names}"),
    ]
)


def voc_classes(model):
    """20 classes in the detector's classifier (R-CNN box predictor, dense head or DETR)."""
    if "roi_heads" in model:
        model.roi_heads.num_classes = NUM_CLASSES
    else:
        model.num_classes = NUM_CLASSES  # DETR's criterion follows it by interpolation
        if "head" in model:
            model.head.num_classes = NUM_CLASSES
    return model


def voc_paper(dataloader, train):
    """The paper's VOC transfer: VOC07+12 trainval, multi-scale 480-800, VOC07 test; 12k
    iterations at 16 images with lr x0.1 at 9k and 11k. Returns the lr schedule."""
    dataloader.train.dataset.names = ("voc_2007_trainval", "voc_2012_trainval")
    dataloader.test.dataset.names = L(register_voc)(
        name="voc_2007_test", dirname=os.path.join(DATASETS, "VOC2007"), split="test", year=2007
    )
    dataloader.train.mapper.augmentations = [
        L(T.ResizeShortestEdge)(
            short_edge_length=tuple(range(480, 801, 32)), max_size=1333, sample_style="choice"
        ),
        L(T.RandomFlip)(horizontal=True),
    ]
    dataloader.train.total_batch_size = 16
    dataloader.evaluator = evaluator
    train.max_iter = 12000
    train.eval_period = 4000
    train.checkpointer.period = 4000
    # 12 units of 1k iterations: steps at 9k and 11k, warmup 250 iterations (Detectron2's).
    return step_schedule(length=12, steps=(9, 11), warmup_fraction=250 / 12000)


def voc_cpu(dataloader, train, *, split="train.1@10"):
    """The CPU-sized VOC setting: fine-tune on a low-data split of VOC 2007 ``train`` (written by
    tools/low_data_splits.py), evaluate on VOC 2007 ``val`` (VOC AP50, COCO AP, class-agnostic AP,
    AP by class frequency in the split). Returns the lr schedule."""
    root = os.path.join(DATASETS, "voc2007")
    dataloader.train.dataset.names = L(register_coco)(
        name=f"voc2007_{split}",
        json_file=os.path.join(DATASETS, "voc2007_splits", f"{split}.json"),
        image_root=os.path.join(root, "VOC2007", "JPEGImages"),
    )
    dataloader.test.dataset.names = L(register_voc)(
        name="voc2007_val", dirname=os.path.join(root, "VOC2007"), split="val", year=2007
    )
    # The paper setting's evaluators, and AP by how often a class occurs in the labeled split.
    dataloader.evaluator = L(DatasetEvaluators)(
        evaluators=[*evaluator.evaluators, frequency_evaluator]
    )
    # 12 epochs of the 250 labeled images of a 10 % split at 2 per batch: 250 * 12 / 2 = 1500
    # iterations; evaluated at 1/3, 2/3 and the end.
    train.max_iter = 1500
    train.eval_period = 500
    train.checkpointer.period = 500
    # lr x0.1 at 2/3 and 8/9 of the run (Detectron2's 1x shape), warmup 10 %.
    return step_schedule(length=9, steps=(6, 8), warmup_fraction=0.1)
