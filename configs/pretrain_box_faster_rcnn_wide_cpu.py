# pretrain_box_faster_rcnn_cpu.py with the neck and heads of
# finetune_faster_rcnn_frozen_wide_voc_cpu.py (256-channel FPN, two RPN convs, four 128-channel
# box-head convs).
from .common.capacity import wide_faster_rcnn
from .pretrain_box_faster_rcnn_cpu import dataloader, lr_multiplier, model, optimizer, train

wide_faster_rcnn(model.detector, fpn_channels=256, rpn_convs=2, box_convs=4, box_conv_dim=128)
train.output_dir = "output/pretrain_box_faster_rcnn_wide_cpu"
