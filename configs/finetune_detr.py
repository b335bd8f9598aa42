# Fine-tuning DETR R-50 on COCO from an AlignDet export, or from the ImageNet backbone alone (the
# baseline): AdamW 1e-4 (backbone x0.1), weight decay 1e-4, gradient norm <= 0.1, no-object weight
# 0.1, auxiliary losses on the 6 decoder layers, DETR's augmentation (flip; half the time a
# 400-600 resize and a 384-600 crop; short side 480-800, long side <= 1333).
#
#   python train_net.py --config-file configs/finetune_detr.py --num-gpus 8 \
#       train.init_checkpoint=output/aligndet_detr.pth
from detectron2.config import LazyCall as L
from detectron2.data import transforms as T
from detectron2.model_zoo import get_config

from .common.data import finetune as dataloader
from .common.detr import model, optimizer
from .common.schedule import step_schedule

dataloader.train.mapper.update(image_format="RGB")
dataloader.test.mapper.update(image_format="RGB")
dataloader.train.mapper.augmentations = [
    L(T.RandomFlip)(horizontal=True),
    L(T.RandomApply)(
        tfm_or_aug=L(T.AugmentationList)(
            augs=[
                L(T.ResizeShortestEdge)(short_edge_length=(400, 500, 600), sample_style="choice"),
                L(T.RandomCrop)(crop_type="absolute_range", crop_size=(384, 600)),
            ]
        ),
        prob=0.5,
    ),
    L(T.ResizeShortestEdge)(
        short_edge_length=tuple(range(480, 801, 32)), max_size=1333, sample_style="choice"
    ),
]
dataloader.train.total_batch_size = 64

train = get_config("common/train.py").train
# torchvision's R-50 in Detectron2's names (its .pkl is tools/convert_backbone.py's output of
# torchvision's resnet50 weights; download it yourself), or an AlignDet export.
train.init_checkpoint = "detectron2://ImageNetPretrained/torchvision/R-50.pkl"
# 150 epochs of COCO train2017 (118287 images) at 64 images per batch: 118287 * 150 / 64 = 277236
# iterations; lr x0.1 after epoch 100 (DETR's shorter schedule). No warmup.
train.max_iter = 277236
train.checkpointer.period = 18482  # 10 epochs
train.eval_period = 18482
lr_multiplier = step_schedule(length=150, steps=(100,))
# lr and schedule are for 64 images per batch (16 GPUs x 4); train.auto_scale=True rescales them.
train.update(reference_batch_size=64, auto_scale=False)
train.output_dir = "output/finetune_detr"
