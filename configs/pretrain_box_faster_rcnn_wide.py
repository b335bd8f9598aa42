# pretrain_box_faster_rcnn.py with the neck and heads of finetune_faster_rcnn_frozen_wide.py
# (512-channel FPN, two RPN convs, four 512-channel box-head convs).
from detectron2.layers import ShapeSpec

from .pretrain_box_faster_rcnn import dataloader, lr_multiplier, model, optimizer, train

model.detector.backbone.out_channels = 512
model.detector.proposal_generator.head.update(in_channels=512, conv_dims=[512] * 2)
model.detector.roi_heads.box_head.update(
    input_shape=ShapeSpec(channels=512, height=7, width=7), conv_dims=[512] * 4
)
train.output_dir = "output/pretrain_box_faster_rcnn_wide"
