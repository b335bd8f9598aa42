# finetune_faster_rcnn_frozen_voc_cpu.py with twice the CPU configs' capacity (Proper Reuse): a
# 256-channel FPN, an RPN head of two 256-channel convs and a box head of four 128-channel convs.
# Its AlignDet export comes from pretrain_box_faster_rcnn_wide_cpu.py.
#
#   python train_net.py --config-file configs/finetune_faster_rcnn_frozen_wide_voc_cpu.py \
#       train.init_checkpoint=output/aligndet_faster_rcnn_wide_cpu.pth
from detectron2.layers import ShapeSpec

from .finetune_faster_rcnn_frozen_voc_cpu import dataloader, lr_multiplier, model, optimizer, train

model.backbone.out_channels = 256
model.proposal_generator.head.update(in_channels=256, conv_dims=[256] * 2)
model.roi_heads.box_head.update(
    input_shape=ShapeSpec(channels=256, height=7, width=7), conv_dims=[128] * 4
)
train.output_dir = "output/finetune_faster_rcnn_frozen_wide_voc_cpu"
