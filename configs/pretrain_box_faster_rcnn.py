# AlignDet box-domain pre-training of Faster R-CNN R-50-FPN, the paper setting
# (docs/DESIGN.md 2.3-2.7).
#
#   python tools/proposals.py generate --image-root datasets/coco/train2017 \
#       --output datasets/coco/proposals/train2017_soco.json --workers 32
#   python train_net.py --config-file configs/pretrain_box_faster_rcnn.py --num-gpus 8
#
# The backbone (ImageNet weights, `train.init_checkpoint`) is frozen; the FPN, RPN and box head
# train on two views per image with the proposals as pseudo ground truth. One pre-training serves
# Faster and Mask R-CNN fine-tuning (there is no mask head here).
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.modeling.box_regression import Box2BoxTransform

from aligndet_d2.modeling import (
    AlignDetRCNN,
    ContrastiveOutputLayers,
    ContrastiveROIHeads,
    FrozenResNet,
    MomentumPair,
)

from .common.faster_rcnn import model as detector
from .common.pretrain import dataloader, lr_multiplier, optimizer, train

detector._target_ = AlignDetRCNN
# Frozen backbone: stem and every stage, FrozenBN, forward under no_grad.
detector.backbone.bottom_up._target_ = FrozenResNet
detector.backbone.bottom_up.freeze_at = 5
# RPN trained with the proposals as ground truth: 4096 anchors per image, positives first (fraction
# 1.0, negatives fill the rest), IoU 0.7 / 0.3; smooth_l1_beta 0 is the L1 loss.
detector.proposal_generator.update(batch_size_per_image=4096, positive_fraction=1.0)
# ROI heads: RPN proposals + pseudo-GT, IoU >= 0.5 to a pseudo-GT box, foreground only, <= 4096 per
# image; the projection 1024 -> 1024 -> 256 replaces the classifier; class-agnostic L1 box
# regression.
detector.roi_heads._target_ = ContrastiveROIHeads
detector.roi_heads.update(num_classes=1, batch_size_per_image=4096, always_keep_gt=False)
detector.roi_heads.box_predictor = L(ContrastiveOutputLayers)(
    input_shape=ShapeSpec(channels=1024),
    box2box_transform=L(Box2BoxTransform)(weights=(10, 10, 5, 5)),
    embed_dim=256,
)

model = L(MomentumPair)(
    detector=detector,
    temperature=0.5,
    base_momentum=0.996,  # cosine schedule to 1.0 over the run
    gather_negatives=False,  # True: negatives from every GPU (the reference uses each GPU's own)
    negative_overlap_iou=None,  # e.g. 0.5: overlapping proposals are not negatives (ours, off)
)

train.output_dir = "output/pretrain_box_faster_rcnn"
