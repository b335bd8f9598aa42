# pretrain_box_faster_rcnn_cpu.py with the neck and heads of
# finetune_faster_rcnn_frozen_wide_voc_cpu.py (256-channel FPN, two RPN convs, four 128-channel
# box-head convs).
from detectron2.layers import ShapeSpec

from .pretrain_box_faster_rcnn_cpu import dataloader, lr_multiplier, model, optimizer, train

model.detector.backbone.out_channels = 256
model.detector.proposal_generator.head.update(in_channels=256, conv_dims=[256] * 2)
model.detector.roi_heads.box_head.update(
    input_shape=ShapeSpec(channels=256, height=7, width=7), conv_dims=[128] * 4
)
train.output_dir = "output/pretrain_box_faster_rcnn_wide_cpu"
