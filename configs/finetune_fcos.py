# Fine-tuning FCOS R-50-FPN on COCO from an AlignDet export, or from scratch neck and head (the
# baseline uses this very config with ImageNet backbone weights only). Detectron2's FCOS 1x config
# with lr x1.5 and weight decay / 2 (docs/DESIGN.md 2.7).
#
#   python tools/export.py --checkpoint output/pretrain_box_fcos/model_final.pth \
#       --output output/aligndet_fcos.pth --finetune-config configs/finetune_fcos.py
#   python train_net.py --config-file configs/finetune_fcos.py --num-gpus 8 \
#       train.init_checkpoint=output/aligndet_fcos.pth
from detectron2.model_zoo import get_config

from aligndet_d2.modeling import AMPSafeFCOS

from .common.data import finetune as dataloader

zoo = get_config("COCO-Detection/fcos_R_50_FPN_1x.py")
model, optimizer, lr_multiplier, train = zoo.model, zoo.optimizer, zoo.lr_multiplier, zoo.train
# FCOS with float32 losses: Detectron2's own fails at the first step under AMP (modeling/fcos.py).
model._target_ = AMPSafeFCOS
optimizer.update(lr=0.01 * 1.5, weight_decay=1e-4 / 2)
train.output_dir = "output/finetune_fcos"
# lr and schedule are for 16 images per batch; with another dataloader.train.total_batch_size,
# train.auto_scale=True rescales them linearly (aligndet_d2/engine/scaling.py).
train.update(reference_batch_size=16, auto_scale=False)
