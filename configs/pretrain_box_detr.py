# AlignDet box-domain pre-training of DETR R-50, the paper setting (docs/DESIGN.md 2.4 and 2.7).
#
#   python tools/proposals.py generate --image-root datasets/coco/train2017 \
#       --output datasets/coco/proposals/train2017_soco.json --workers 32
#   python tools/cluster_proposals.py --json datasets/coco/proposals/train2017_soco.json \
#       --image-root datasets/coco/train2017 --config-file configs/pretrain_box_detr.py \
#       --output datasets/coco/proposals/train2017_soco_k256.json --device cuda
#   python train_net.py --config-file configs/pretrain_box_detr.py --num-gpus 8
#
# The R-50 is frozen; the transformer, queries and heads train on two views per image with the
# first 50 proposals as pseudo ground truth and their 256 clusters as classes (set loss: cost and
# loss 1 class + 5 L1 + 2 GIoU on every decoder layer, no-object weight 1.0, the cross-entropy
# divided by the matched queries as the reference's); a box-only match on each decoder layer gives
# each proposal a query per layer, whose projected decoder outputs enter the contrastive loss.
from detectron2.config import LazyCall as L

from aligndet_d2.modeling import FrozenResNet, MomentumPair
from aligndet_d2.modeling.detr import AlignDetDETR, HungarianMatcher

from .common.detr import model as detector
from .common.detr import optimizer
from .common.pretrain import dataloader, train
from .common.schedule import step_schedule

detector._target_ = AlignDetDETR
detector.backbone._target_ = FrozenResNet
detector.backbone.freeze_at = 5  # stem and every stage: forward under no_grad
detector.num_classes = 256  # the clusters of tools/cluster_proposals.py
detector.criterion.eos_coef = 1.0
detector.criterion.class_normalizer = "matched"
detector.instance_matcher = L(HungarianMatcher)(cost_class=0.0, cost_bbox=5.0, cost_giou=2.0)
detector.embed_dim = 256
detector.contrast_layers = "all"  # every decoder layer, as the reference

model = L(MomentumPair)(detector=detector, temperature=0.5, base_momentum=0.996)

dataloader.train.dataset.json_file = "datasets/coco/proposals/train2017_soco_k256.json"
dataloader.train.mapper.update(max_proposals=50, image_format="RGB")
# DETR's torchvision R-50 (RGB, ImageNet mean and std), as in finetune_detr.py.
train.init_checkpoint = "detectron2://ImageNetPretrained/torchvision/R-50.pkl"
# AdamW at the reference's 2e-4 x batch / 64: 5e-5 for 16 images; gradient norm <= 0.1.
optimizer.lr = 2e-4 * 16 / 64
# 50 epochs of COCO train2017 at 16 images per batch: 118287 * 50 / 16 = 369647 iterations; lr x0.1
# after epoch 40 (ours: the reference gives the length only). No warmup, as DETR.
train.max_iter = 369647
train.checkpointer.period = 7393  # one epoch
lr_multiplier = step_schedule(length=50, steps=(40,))
train.output_dir = "output/pretrain_box_detr"
