# CPU-sized Mask R-CNN fine-tuning: finetune_faster_rcnn_cpu.py plus a light mask head (it starts
# from scratch; the box-domain pre-training serves Faster and Mask R-CNN alike). Needs a dataset
# with masks (the bundled coco64 has boxes only).
from .common.cpu import lite_mask_rcnn
from .common.mask_rcnn import model
from .finetune_faster_rcnn_cpu import dataloader, lr_multiplier, optimizer, train

lite_mask_rcnn(model)
model.backbone.bottom_up.freeze_at = 4
dataloader.train.mapper.use_instance_mask = True
dataloader.evaluator.evaluators[0].tasks = ("bbox", "segm")
train.output_dir = "output/finetune_mask_rcnn_cpu"
