# finetune_faster_rcnn_frozen.py with Proper Reuse's capacity: a 512-channel FPN, an RPN head of two
# 512-channel convs and a box head of four 512-channel convs (+ fc 1024). Its AlignDet export comes
# from pretrain_box_faster_rcnn_wide.py (same neck and heads).
#
#   python train_net.py --config-file configs/finetune_faster_rcnn_frozen_wide.py --num-gpus 8 \
#       train.init_checkpoint=output/aligndet_faster_rcnn_wide.pth
from .common.capacity import wide_faster_rcnn
from .finetune_faster_rcnn_frozen import dataloader, lr_multiplier, model, optimizer, train

wide_faster_rcnn(model, fpn_channels=512, rpn_convs=2, box_convs=4, box_conv_dim=512)
train.output_dir = "output/finetune_faster_rcnn_frozen_wide"
