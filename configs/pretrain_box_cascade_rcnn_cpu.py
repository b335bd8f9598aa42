# CPU-sized AlignDet pre-training of Cascade R-CNN: pretrain_box_faster_rcnn_cpu.py (frozen
# EfficientNet-Lite0, 128-channel FPN, the shrunk head, the first 32 proposals) with three stages,
# stage 1 sampling 128 ROIs per image at 25 % foreground.
#
#   python train_net.py --config-file configs/pretrain_box_cascade_rcnn_cpu.py
from .common.capacity import contrastive_cascade_roi_heads
from .pretrain_box_faster_rcnn_cpu import dataloader, lr_multiplier, model, optimizer, train

model.detector.roi_heads = contrastive_cascade_roi_heads(
    model.detector.roi_heads, rois_per_image=128
)
train.output_dir = "output/pretrain_box_cascade_rcnn_cpu"
