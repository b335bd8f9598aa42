# Fine-tuning Mask R-CNN R-50-FPN from the same AlignDet export as Faster R-CNN (the mask head
# starts from scratch: pre-training has none). Same schedule changes as finetune_faster_rcnn.py.
from .common.mask_rcnn import model
from .finetune_faster_rcnn import dataloader, lr_multiplier, optimizer, train

dataloader.train.mapper.use_instance_mask = True
dataloader.evaluator.evaluators[0].tasks = ("bbox", "segm")
train.output_dir = "output/finetune_mask_rcnn"
