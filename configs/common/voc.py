# Pascal VOC fine-tuning and evaluation (docs/DESIGN.md 2.7), for any detector config: the paper's
# transfer (VOC07+12 trainval -> VOC07 test) and the CPU-sized low-data setting (a split of VOC 2007
# train -> VOC 2007 val). The configs set their classifier to NUM_CLASSES and the schedule's length.
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

from .cpu import dataloader as _cpu_dataloader
from .data import finetune, frequency_evaluator
from .schedule import step_schedule

DATASETS = os.getenv("DETECTRON2_DATASETS", "datasets")
NUM_CLASSES = 20
CPU_SPLIT = "train.1@10"  # tools/low_data_splits.py: fold (seed) 1 of the 10 % splits

# VOC's 11-point AP50 (difficult boxes ignored), COCO-style AP (difficult boxes counted) and
# class-agnostic AP, on the same images.
evaluator = L(DatasetEvaluators)(
    evaluators=[
        L(VOCDetectionEvaluator)(dataset_name="${....test.dataset.names}"),
        L(COCOEvaluator)(dataset_name="${....test.dataset.names}", tasks=("bbox",)),
        L(ClassAgnosticCOCOEvaluator)(dataset_name="${....test.dataset.names}"),
    ]
)

# The paper's VOC transfer: VOC07+12 trainval at 16 images per batch, multi-scale 480-800, VOC07
# test. Its configs train 12k iterations with lr x0.1 at 9k and 11k (paper_schedule).
paper_dataloader = finetune
paper_dataloader.train.dataset.names = ("voc_2007_trainval", "voc_2012_trainval")
paper_dataloader.test.dataset.names = L(register_voc)(
    name="voc_2007_test", dirname=os.path.join(DATASETS, "VOC2007"), split="test", year=2007
)
paper_dataloader.train.mapper.augmentations = [
    L(T.ResizeShortestEdge)(
        short_edge_length=tuple(range(480, 801, 32)), max_size=1333, sample_style="choice"
    ),
    L(T.RandomFlip)(horizontal=True),
]
paper_dataloader.train.total_batch_size = 16
paper_dataloader.evaluator = evaluator
# 12 units of 1k iterations: steps at 9k and 11k, warmup 250 iterations (Detectron2's).
paper_schedule = step_schedule(length=12, steps=(9, 11), warmup_fraction=250 / 12000)

# The CPU-sized setting: the CPU configs' loader (configs/common/cpu.py) on a low-data split of VOC
# 2007 train, evaluated on VOC 2007 val with the evaluators above and AP by how often a class
# occurs in the labeled split. The split's schedule is the CPU configs' (12 epochs of it).
cpu_dataloader = _cpu_dataloader
cpu_dataloader.train.dataset.names = L(register_coco)(
    name=f"voc2007_{CPU_SPLIT}",
    json_file=os.path.join(DATASETS, "voc2007_splits", f"{CPU_SPLIT}.json"),
    image_root=os.path.join(DATASETS, "voc2007", "VOC2007", "JPEGImages"),
)
cpu_dataloader.test.dataset.names = L(register_voc)(
    name="voc2007_val", dirname=os.path.join(DATASETS, "voc2007", "VOC2007"), split="val", year=2007
)
cpu_dataloader.evaluator = L(DatasetEvaluators)(
    evaluators=[*evaluator.evaluators, frequency_evaluator]
)
