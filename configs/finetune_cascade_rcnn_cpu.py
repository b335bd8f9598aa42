# finetune_faster_rcnn_cpu.py with Cascade R-CNN's three box heads: the fine-tune of
# pretrain_box_cascade_rcnn_cpu.py's export (and its from-scratch baseline).
#
#   python train_net.py --config-file configs/finetune_cascade_rcnn_cpu.py \
#       train.init_checkpoint=output/aligndet_cascade_rcnn_cpu.pth
from .common.capacity import cascade_roi_heads
from .finetune_faster_rcnn_cpu import dataloader, lr_multiplier, model, optimizer, train

model.roi_heads = cascade_roi_heads(model.roi_heads)
train.output_dir = "output/finetune_cascade_rcnn_cpu"
