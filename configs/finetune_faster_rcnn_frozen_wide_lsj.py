# finetune_faster_rcnn_frozen_wide.py trained on 1024 x 1024 crops of large-scale jitter
# (Detectron2's new_baselines augmentation), which Proper Reuse combines with the frozen backbone.
# Same schedule.
#
#   python train_net.py --config-file configs/finetune_faster_rcnn_frozen_wide_lsj.py --num-gpus 8 \
#       train.init_checkpoint=output/aligndet_faster_rcnn_wide.pth
from .common.data import lsj_augmentations
from .finetune_faster_rcnn_frozen_wide import dataloader, lr_multiplier, model, optimizer, train

dataloader.train.mapper.augmentations = lsj_augmentations(image_size=1024)
train.output_dir = "output/finetune_faster_rcnn_frozen_wide_lsj"
