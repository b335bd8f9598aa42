# CPU-sized Faster R-CNN fine-tuning on the bundled data (datasets/coco64): EfficientNet-Lite0
# trained from its 4th block on (BatchNorm statistics frozen), 128-channel FPN, the shrunk head of
# the CPU pre-training config, short side ~320. The from-scratch baseline uses this very config with
# train.init_checkpoint="" (ImageNet backbone only).
#
#   python tools/export.py --checkpoint output/pretrain_box_faster_rcnn_cpu/model_final.pth \
#       --output output/aligndet_faster_rcnn_cpu.pth \
#       --finetune-config configs/finetune_faster_rcnn_cpu.py
#   python train_net.py --config-file configs/finetune_faster_rcnn_cpu.py \
#       train.init_checkpoint=output/aligndet_faster_rcnn_cpu.pth
from detectron2.layers import ShapeSpec

from .common.cpu import (
    ANCHOR_SIZES,
    BATCH,
    BOX_CONVS,
    BOX_FC,
    FPN_CHANNELS,
    PIXEL_MEAN,
    PIXEL_STD,
    POOLER_SCALES,
    ROI_FEATURES,
    ROIS_PER_IMAGE,
    RPN_FEATURES,
    STRIDES,
    dataloader,
    lite_fpn,
    lr_multiplier,
    train,
)
from .finetune_faster_rcnn import model, optimizer

model.backbone = lite_fpn()
model.update(pixel_mean=PIXEL_MEAN, pixel_std=PIXEL_STD, input_format="RGB")
model.proposal_generator.update(
    in_features=RPN_FEATURES, pre_nms_topk=(1000, 500), post_nms_topk=(500, 300)
)
model.proposal_generator.head.in_channels = FPN_CHANNELS
model.proposal_generator.anchor_generator.update(sizes=ANCHOR_SIZES, strides=STRIDES)
model.roi_heads.update(box_in_features=ROI_FEATURES, batch_size_per_image=ROIS_PER_IMAGE)
model.roi_heads.box_pooler.scales = POOLER_SCALES
model.roi_heads.box_head.update(
    input_shape=ShapeSpec(channels=FPN_CHANNELS, height=7, width=7),
    conv_dims=BOX_CONVS,
    fc_dims=[BOX_FC],
    conv_norm="GN",
)
model.roi_heads.box_predictor.input_shape = ShapeSpec(channels=BOX_FC)
model.backbone.bottom_up.freeze_at = 4  # stem and blocks 1-3 frozen; the rest trains
optimizer.lr = 0.02 * BATCH / 16 * 1.5  # the paper's lr scaled linearly to the batch, then x1.5
train.output_dir = "output/finetune_faster_rcnn_cpu"
