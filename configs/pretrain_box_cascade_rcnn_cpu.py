# CPU-sized AlignDet pre-training of Cascade R-CNN: pretrain_box_faster_rcnn_cpu.py (frozen
# EfficientNet-Lite0, 128-channel FPN, the shrunk head, the first 32 proposals) with three stages,
# stage 1 sampling 128 ROIs per image at 25 % foreground.
#
#   python train_net.py --config-file configs/pretrain_box_cascade_rcnn_cpu.py
from aligndet_d2.modeling import ContrastiveCascadeROIHeads

from .common.capacity import cascade_heads
from .pretrain_box_faster_rcnn_cpu import dataloader, lr_multiplier, model, optimizer, train

cascade_heads(model.detector)
roi = model.detector.roi_heads
roi.pop("always_keep_gt")
roi.update(
    _target_=ContrastiveCascadeROIHeads,
    batch_size_per_image=128,
    positive_fraction=0.25,
    stage_loss_weights=(1.0, 0.5, 0.25),
)
train.output_dir = "output/pretrain_box_cascade_rcnn_cpu"
