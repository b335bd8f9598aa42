# AlignDet box-domain pre-training of Cascade R-CNN R-50-FPN, the paper setting (docs/DESIGN.md 2.4;
# the reference pre-trains HTC): pretrain_box_faster_rcnn.py with three box heads and projections
# (IoU 0.5 / 0.6 / 0.7), stage 1 sampling 512 ROIs per image at 25 % foreground, background ROIs as
# negatives, per-stage contrastive and smooth L1 (beta 1) box losses weighted 1 / 0.5 / 0.25
# (aligndet_d2/modeling/cascade.py).
#
#   python train_net.py --config-file configs/pretrain_box_cascade_rcnn.py --num-gpus 8
from .common.capacity import contrastive_cascade_roi_heads
from .pretrain_box_faster_rcnn import dataloader, lr_multiplier, model, optimizer, train

model.detector.roi_heads = contrastive_cascade_roi_heads(
    model.detector.roi_heads, rois_per_image=512
)
train.output_dir = "output/pretrain_box_cascade_rcnn"
