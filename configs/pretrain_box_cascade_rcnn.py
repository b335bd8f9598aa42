# AlignDet box-domain pre-training of Cascade R-CNN R-50-FPN, the paper setting (DESIGN.md 2.4; the
# reference pre-trains HTC): pretrain_box_faster_rcnn.py with three box heads and projections
# (IoU 0.5 / 0.6 / 0.7), stage 1 sampling 512 ROIs per image at 25 % foreground, background ROIs
# as negatives, per-stage contrastive and L1 losses weighted 1 / 0.5 / 0.25
# (aligndet_d2/modeling/cascade.py).
#
#   python train_net.py --config-file configs/pretrain_box_cascade_rcnn.py --num-gpus 8
from aligndet_d2.modeling import ContrastiveCascadeROIHeads

from .common.capacity import cascade_heads
from .pretrain_box_faster_rcnn import dataloader, lr_multiplier, model, optimizer, train

cascade_heads(model.detector)
roi = model.detector.roi_heads
roi.pop("always_keep_gt")  # the R-CNN pre-training's foreground-only sampling
roi.update(
    _target_=ContrastiveCascadeROIHeads,
    batch_size_per_image=512,
    positive_fraction=0.25,
    stage_loss_weights=(1.0, 0.5, 0.25),
)
train.output_dir = "output/pretrain_box_cascade_rcnn"
