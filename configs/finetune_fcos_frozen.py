# FCOS fine-tuning with the ImageNet backbone frozen (Proper Reuse, CVPR 2022): only the FPN and
# head train, plus residual adapters beside the backbone when switched on
# (model.backbone.bottom_up.adapters="parallel" or "series";
# aligndet_d2/modeling/backbones/adapters.py). The backbone's forward runs without a graph when no
# adapter trains.
#
#   python train_net.py --config-file configs/finetune_fcos_frozen.py --num-gpus 8 \
#       train.init_checkpoint=output/aligndet_fcos.pth \
#       model.backbone.bottom_up.adapters=parallel
from aligndet_d2.modeling import FrozenResNet

from .finetune_fcos import dataloader, lr_multiplier, model, optimizer, train

model.backbone.bottom_up._target_ = FrozenResNet
model.backbone.bottom_up.freeze_at = 5  # the stem and res2-res5: no backbone weight trains
model.backbone.bottom_up.adapters = None
train.output_dir = "output/finetune_fcos_frozen"
