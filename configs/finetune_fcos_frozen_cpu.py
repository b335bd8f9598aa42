# finetune_fcos_cpu.py (the CPU-sized fine-tuning on the bundled data) with the whole
# EfficientNet-Lite0 frozen (Proper Reuse, CVPR 2022); residual adapters beside its blocks with
# model.backbone.bottom_up.adapters="parallel" or "series".
#
#   python train_net.py --config-file configs/finetune_fcos_frozen_cpu.py \
#       train.init_checkpoint=output/aligndet_fcos_cpu.pth
from aligndet_d2.modeling import FREEZE_ALL

from .finetune_fcos_cpu import dataloader, lr_multiplier, model, optimizer, train

model.backbone.bottom_up.freeze_at = FREEZE_ALL  # the stem and all 16 blocks
model.backbone.bottom_up.adapters = None
train.output_dir = "output/finetune_fcos_frozen_cpu"
