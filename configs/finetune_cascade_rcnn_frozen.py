# finetune_faster_rcnn_frozen.py (the ImageNet backbone frozen, optional residual adapters) with
# Cascade R-CNN's box heads: Proper Reuse's frozen backbone with added detector capacity.
#
#   python train_net.py --config-file configs/finetune_cascade_rcnn_frozen.py --num-gpus 8 \
#       model.backbone.bottom_up.adapters=parallel
from .common.capacity import cascade_roi_heads
from .finetune_faster_rcnn_frozen import dataloader, lr_multiplier, model, optimizer, train

model.roi_heads = cascade_roi_heads(model.roi_heads)
train.output_dir = "output/finetune_cascade_rcnn_frozen"
