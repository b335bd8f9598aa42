# pretrain_box_faster_rcnn.py with the neck and heads of finetune_faster_rcnn_frozen_wide.py
# (512-channel FPN, two RPN convs, four 512-channel box-head convs).
from .common.capacity import wide_faster_rcnn
from .pretrain_box_faster_rcnn import dataloader, lr_multiplier, model, optimizer, train

wide_faster_rcnn(model.detector, fpn_channels=512, rpn_convs=2, box_convs=4, box_conv_dim=512)
train.output_dir = "output/pretrain_box_faster_rcnn_wide"
