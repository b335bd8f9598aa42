# CPU-sized FCOS fine-tuning on the bundled data (datasets/coco64): EfficientNet-Lite0 trained from
# its 4th block on (BatchNorm statistics frozen), the CPU pre-training shapes (128-channel FPN,
# P3-P7, two-conv towers), short side ~320. The from-scratch baseline is this very config with
# train.init_checkpoint="".
#
#   python tools/export.py --checkpoint output/pretrain_box_fcos_cpu/model_final.pth \
#       --output output/aligndet_fcos_cpu.pth --finetune-config configs/finetune_fcos_cpu.py
#   python train_net.py --config-file configs/finetune_fcos_cpu.py \
#       train.init_checkpoint=output/aligndet_fcos_cpu.pth
from detectron2.layers import ShapeSpec

from .common.cpu import (
    BATCH,
    FPN_CHANNELS,
    PIXEL_MEAN,
    PIXEL_STD,
    dataloader,
    lite_fpn,
    lr_multiplier,
    train,
)
from .finetune_fcos import model, optimizer

model.backbone = lite_fpn(dense=True)
model.update(pixel_mean=PIXEL_MEAN, pixel_std=PIXEL_STD)
model.head.update(
    input_shape=[ShapeSpec(channels=FPN_CHANNELS)] * 5, conv_dims=[FPN_CHANNELS] * 2, norm="GN"
)
model.backbone.bottom_up.freeze_at = 4  # stem and blocks 1-3 frozen; the rest trains
model.test_score_thresh = 0.05
optimizer.lr = 0.01 * BATCH / 16 * 1.5  # the paper's lr scaled linearly to the batch, then x1.5
train.output_dir = "output/finetune_fcos_cpu"
