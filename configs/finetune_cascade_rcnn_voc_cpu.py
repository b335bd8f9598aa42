# finetune_cascade_rcnn_cpu.py on a VOC 2007 low-data split (as the other _voc_cpu configs).
#
#   python train_net.py --config-file configs/finetune_cascade_rcnn_voc_cpu.py \
#       train.init_checkpoint=output/aligndet_cascade_rcnn_cpu.pth
from .common.voc import voc_classes, voc_cpu
from .finetune_cascade_rcnn_cpu import dataloader, model, optimizer, train

voc_classes(model)
lr_multiplier = voc_cpu(dataloader, train)
train.output_dir = "output/finetune_cascade_rcnn_voc_cpu"
