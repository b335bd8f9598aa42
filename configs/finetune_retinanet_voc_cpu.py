# CPU-sized fine-tuning on VOC 2007: finetune_retinanet_cpu.py on a low-data split of VOC `train`
# (default the 10 % split of seed 1: tools/low_data_splits.py), evaluated on VOC `val` with VOC's
# 11-point AP50, COCO-style AP and class-agnostic AP. $DETECTRON2_DATASETS holds voc2007/ (a link
# to ../shared/data/voc2007) and voc2007_splits/ (see configs/common/voc.py).
#
#   python train_net.py --config-file configs/finetune_retinanet_voc_cpu.py \
#       train.init_checkpoint=output/aligndet_retinanet_cpu.pth
from .common.voc import voc_classes, voc_cpu
from .finetune_retinanet_cpu import dataloader, model, optimizer, train

voc_classes(model)
lr_multiplier = voc_cpu(dataloader, train)
train.output_dir = "output/finetune_retinanet_voc_cpu"
