# finetune_faster_rcnn.py with Cascade R-CNN's box heads (three stages at IoU 0.5 / 0.6 / 0.7,
# Detectron2's CascadeROIHeads): the capacity Proper Reuse adds when the backbone is frozen
# (finetune_cascade_rcnn_frozen.py). Without train.init_checkpoint it starts from the ImageNet
# backbone; a Faster R-CNN export does not fit its box heads (the key check names them).
#
#   python train_net.py --config-file configs/finetune_cascade_rcnn.py --num-gpus 8
from .common.capacity import cascade_heads
from .finetune_faster_rcnn import dataloader, lr_multiplier, model, optimizer, train

cascade_heads(model)
train.output_dir = "output/finetune_cascade_rcnn"
