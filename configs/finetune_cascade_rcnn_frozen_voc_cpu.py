# finetune_faster_rcnn_frozen_voc_cpu.py (CPU-sized, VOC 2007, EfficientNet-Lite0 frozen) with
# Cascade R-CNN's three box heads.
#
#   python train_net.py --config-file configs/finetune_cascade_rcnn_frozen_voc_cpu.py
from .common.capacity import cascade_roi_heads
from .finetune_faster_rcnn_frozen_voc_cpu import dataloader, lr_multiplier, model, optimizer, train

model.roi_heads = cascade_roi_heads(model.roi_heads)
train.output_dir = "output/finetune_cascade_rcnn_frozen_voc_cpu"
