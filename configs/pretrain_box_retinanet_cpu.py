# CPU-sized AlignDet pre-training of RetinaNet: frozen EfficientNet-Lite0, 128-channel FPN (P3-P7),
# two-conv towers, short side ~320, the first 50 proposals per image. Defaults to the bundled data;
# make its proposals first (see pretrain_box_faster_rcnn_cpu.py), then:
#
#   python train_net.py --config-file configs/pretrain_box_retinanet_cpu.py
from detectron2.layers import ShapeSpec

from .common.cpu import BATCH, FPN_CHANNELS, PIXEL_MEAN, PIXEL_STD, lite_fpn
from .common.cpu import pretrain_dataloader as dataloader
from .common.cpu import pretrain_train as train
from .pretrain_box_retinanet import lr_multiplier, model, optimizer

model.detector.backbone = lite_fpn(dense=True)
model.detector.update(pixel_mean=PIXEL_MEAN, pixel_std=PIXEL_STD, input_format="RGB")
model.detector.head.update(
    input_shape=[ShapeSpec(channels=FPN_CHANNELS)] * 5, conv_dims=[FPN_CHANNELS] * 2, norm="GN"
)
# See pretrain_box_faster_rcnn_cpu.py: 0.996 suits the paper's run length, not 192 iterations.
model.base_momentum = 0.97
dataloader.train.mapper.max_proposals = 50
optimizer.lr = 0.01 * BATCH / 16  # the paper's lr scaled linearly to the batch
lr_multiplier.warmup_length = 0.1
train.output_dir = "output/pretrain_box_retinanet_cpu"
