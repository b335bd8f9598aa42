# finetune_faster_rcnn_frozen.py with Proper Reuse's capacity: a 512-channel FPN, an RPN head of two
# 512-channel convs and a box head of four 512-channel convs (+ fc 1024). Its AlignDet export comes
# from pretrain_box_faster_rcnn_wide.py (same neck and heads).
#
#   python train_net.py --config-file configs/finetune_faster_rcnn_frozen_wide.py --num-gpus 8 \
#       train.init_checkpoint=output/aligndet_faster_rcnn_wide.pth
from detectron2.layers import ShapeSpec

from .finetune_faster_rcnn_frozen import dataloader, lr_multiplier, model, optimizer, train

model.backbone.out_channels = 512
model.proposal_generator.head.update(in_channels=512, conv_dims=[512] * 2)
model.roi_heads.box_head.update(
    input_shape=ShapeSpec(channels=512, height=7, width=7), conv_dims=[512] * 4
)
train.output_dir = "output/finetune_faster_rcnn_frozen_wide"
