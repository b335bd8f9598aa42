# What every paper-setting pre-training config shares (docs/DESIGN.md 2.7): the proposals + two-view
# data, SGD with momentum 0.9 and weight decay 1e-4 at 16 images per batch, 12 epochs of COCO
# train2017.
from detectron2.model_zoo import get_config

from .data import pretrain as dataloader
from .schedule import step_schedule

optimizer = get_config("common/optim.py").SGD
optimizer.update(lr=0.02, weight_decay=1e-4)  # R-CNN; the dense detectors use 0.01

train = get_config("common/train.py").train
# ImageNet-trained R-50 in Detectron2's format (download it yourself; any Detectron2 R-50 works).
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
# 12 epochs of COCO train2017 (118287 images) at 16 images per batch: 118287 * 12 / 16 = 88716
# iters; lr x0.1 after epochs 8 and 11 (iters 59144 and 81322); warmup 500 iters.
train.max_iter = 88716
train.checkpointer.period = 7393  # one epoch
train.eval_period = 0  # nothing to evaluate during pre-training
# lr and schedule are for 16 images per batch; with another dataloader.train.total_batch_size,
# train.auto_scale=True rescales them linearly (aligndet_d2/engine/scaling.py).
train.update(reference_batch_size=16, auto_scale=False)
lr_multiplier = step_schedule(length=12, steps=(8, 11), warmup_fraction=500 / 88716)
