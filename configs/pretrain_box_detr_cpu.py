# CPU-sized AlignDet pre-training of DETR: the CPU-sized DETR (frozen EfficientNet-Lite0 res5,
# 128-wide 2 + 2-layer transformer, 30 queries) on the bundled data's proposals, the first 20 per
# image, clustered into 16 pseudo-classes:
#
#   python tools/cluster_proposals.py --json output/proposals/coco64_train.json \
#       --image-root datasets/coco64/images --config-file configs/pretrain_box_detr_cpu.py \
#       --output output/proposals/coco64_train_k16.json --num-clusters 16 --max-proposals 20 \
#       --short-edge 320 --max-size 533
#   python train_net.py --config-file configs/pretrain_box_detr_cpu.py
from detectron2.config import LazyCall as L

from aligndet_d2.modeling import FREEZE_ALL, EfficientNetLite

from .common.cpu import PIXEL_MEAN, PIXEL_STD
from .common.cpu import pretrain_dataloader as dataloader
from .common.cpu import pretrain_train as train
from .pretrain_box_detr import lr_multiplier, model, optimizer

# EfficientNet-Lite0's last stage (DETR has no FPN), all of it frozen.
model.detector.backbone = L(EfficientNetLite)(out_features=["res5"], freeze_at=FREEZE_ALL)
model.detector.update(
    pixel_mean=PIXEL_MEAN, pixel_std=PIXEL_STD, input_format="RGB", num_queries=30, num_classes=16
)
model.detector.transformer.update(
    d_model=128, nhead=4, num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=512
)
# See pretrain_box_faster_rcnn_cpu.py: 0.996 suits the paper's run length, not 192 iterations.
model.base_momentum = 0.97
dataloader.train.dataset.json_file = "output/proposals/coco64_train_k16.json"
dataloader.train.mapper.max_proposals = 20
# AdamW at DETR's fine-tune lr, not scaled down to the batch of 2 as the SGD configs' lr is (the
# reference's 2e-4 x batch / 64 would be 6e-6); a choice of ours, not tuned.
optimizer.lr = 1e-4
lr_multiplier.warmup_length = 0.1
train.output_dir = "output/pretrain_box_detr_cpu"
