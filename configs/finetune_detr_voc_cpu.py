# CPU-sized DETR fine-tuning on a VOC 2007 low-data split (finetune_detr_cpu.py on VOC, as the
# other _voc_cpu configs).
#
#   python train_net.py --config-file configs/finetune_detr_voc_cpu.py \
#       train.init_checkpoint=output/aligndet_detr_cpu.pth
from .common.voc import voc_classes, voc_cpu
from .finetune_detr_cpu import dataloader, model, optimizer, train

voc_classes(model)
lr_multiplier = voc_cpu(dataloader, train)
train.output_dir = "output/finetune_detr_voc_cpu"
