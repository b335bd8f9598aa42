# Fine-tuning Faster R-CNN R-50-FPN on COCO from an AlignDet export, or from scratch neck and heads
# (the baseline uses this very config with the ImageNet backbone only):
#
#   python tools/export.py --checkpoint output/pretrain_box_faster_rcnn/model_final.pth \
#       --output output/aligndet_faster_rcnn.pth --finetune-config configs/finetune_faster_rcnn.py
#   python train_net.py --config-file configs/finetune_faster_rcnn.py --num-gpus 8 \
#       train.init_checkpoint=output/aligndet_faster_rcnn.pth
#
# Detectron2's 1x schedule with lr x1.5 and weight decay / 2 (docs/DESIGN.md 2.7); the box head has
# the pre-training shape (4 conv + 1 fc).
from detectron2.model_zoo import get_config

from .common.data import finetune as dataloader
from .common.faster_rcnn import model

optimizer = get_config("common/optim.py").SGD
optimizer.update(lr=0.02 * 1.5, weight_decay=1e-4 / 2)
lr_multiplier = get_config("common/coco_schedule.py").lr_multiplier_1x
train = get_config("common/train.py").train
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"  # or an AlignDet export
train.output_dir = "output/finetune_faster_rcnn"
# lr and schedule are for 16 images per batch; with another dataloader.train.total_batch_size,
# train.auto_scale=True rescales them linearly (aligndet_d2/engine/scaling.py).
train.update(reference_batch_size=16, auto_scale=False)
