# CPU-sized Mask R-CNN fine-tuning: finetune_faster_rcnn_cpu.py plus a light mask head (it starts
# from scratch; the box-domain pre-training serves Faster and Mask R-CNN alike). Needs a dataset
# with masks (the bundled coco64 has boxes only).
from detectron2.layers import ShapeSpec

from .common.cpu import FPN_CHANNELS, POOLER_SCALES, ROI_FEATURES
from .common.mask_rcnn import model as _mask_rcnn  # "_": a source of values, not a field
from .finetune_faster_rcnn_cpu import dataloader, lr_multiplier, model, optimizer, train

# Mask R-CNN's mask head on the CPU-sized Faster R-CNN, light: on p3-p5, three 128-channel convs.
model.roi_heads.update(
    mask_in_features=ROI_FEATURES,
    mask_pooler=_mask_rcnn.roi_heads.mask_pooler,
    mask_head=_mask_rcnn.roi_heads.mask_head,
)
model.roi_heads.mask_pooler.scales = POOLER_SCALES
model.roi_heads.mask_head.update(
    input_shape=ShapeSpec(channels=FPN_CHANNELS, width=14, height=14),
    conv_dims=[FPN_CHANNELS] * 3,
)
dataloader.train.mapper.use_instance_mask = True
dataloader.evaluator.evaluators[0].tasks = ("bbox", "segm")
train.output_dir = "output/finetune_mask_rcnn_cpu"
