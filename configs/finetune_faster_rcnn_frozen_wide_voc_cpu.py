# finetune_faster_rcnn_frozen_voc_cpu.py with twice the CPU configs' capacity (Proper Reuse): a
# 256-channel FPN, an RPN head of two 256-channel convs and a box head of four 128-channel convs.
# Its AlignDet export comes from pretrain_box_faster_rcnn_wide_cpu.py.
#
#   python train_net.py --config-file configs/finetune_faster_rcnn_frozen_wide_voc_cpu.py \
#       train.init_checkpoint=output/aligndet_faster_rcnn_wide_cpu.pth
from .common.capacity import wide_faster_rcnn
from .finetune_faster_rcnn_frozen_voc_cpu import dataloader, lr_multiplier, model, optimizer, train

wide_faster_rcnn(model, fpn_channels=256, rpn_convs=2, box_convs=4, box_conv_dim=128)
train.output_dir = "output/finetune_faster_rcnn_frozen_wide_voc_cpu"
