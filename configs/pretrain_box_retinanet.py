# AlignDet box-domain pre-training of RetinaNet R-50-FPN, the paper setting (docs/DESIGN.md 2.4).
#
#   python train_net.py --config-file configs/pretrain_box_retinanet.py --num-gpus 8
#
# The class logits become a projection (conv1x1 256 -> 256 -> 9 x 256): one embedding per anchor.
# Anchors with IoU >= 0.5 to a pseudo-GT box take its id, < 0.4 are background (contrastive
# negatives only); 2048 anchors per image are sampled, positives first; L1 loss on the sampled
# positives' deltas. The first 50 proposals of each image are used.
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.model_zoo import get_config

from aligndet_d2.modeling import (
    AlignDetRetinaNet,
    ContrastiveRetinaNetHead,
    FrozenResNet,
    MomentumPair,
)

from .common.pretrain import dataloader, lr_multiplier, optimizer, train

detector = get_config("common/models/retinanet.py").model
detector._target_ = AlignDetRetinaNet
detector.backbone.bottom_up._target_ = FrozenResNet
detector.backbone.bottom_up.freeze_at = 5
detector.head = L(ContrastiveRetinaNetHead)(
    input_shape=[ShapeSpec(channels=256)] * 5,
    num_anchors=9,
    conv_dims=[256, 256, 256, 256],
    embed_dim=256,
)
detector.samples_per_image = 2048

model = L(MomentumPair)(
    detector=detector,
    temperature=0.5,
    base_momentum=0.996,
    negative_overlap_iou=None,  # e.g. 0.5: overlapping proposals are not negatives (ours, off)
)

dataloader.train.mapper.max_proposals = 50
optimizer.lr = 0.01
train.output_dir = "output/pretrain_box_retinanet"
