# finetune_faster_rcnn.py with Cascade R-CNN's box heads (three stages at IoU 0.5 / 0.6 / 0.7,
# Detectron2's CascadeROIHeads): the capacity Proper Reuse adds when the backbone is frozen
# (finetune_cascade_rcnn_frozen.py). It takes the export of pretrain_box_cascade_rcnn.py, or the
# ImageNet backbone alone (the baseline); a Faster R-CNN export does not fit its box heads (the key
# check names them).
#
#   python train_net.py --config-file configs/finetune_cascade_rcnn.py --num-gpus 8 \
#       train.init_checkpoint=output/aligndet_cascade_rcnn.pth
from .common.capacity import cascade_roi_heads
from .finetune_faster_rcnn import dataloader, lr_multiplier, model, optimizer, train

model.roi_heads = cascade_roi_heads(model.roi_heads)
train.output_dir = "output/finetune_cascade_rcnn"
