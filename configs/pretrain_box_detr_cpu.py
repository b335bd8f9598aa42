# CPU-sized AlignDet pre-training of DETR: the lite_detr model (frozen EfficientNet-Lite0 res5,
# 128-wide 2 + 2-layer transformer, 30 queries) on the bundled data's proposals, the first 20 per
# image, clustered into 16 pseudo-classes:
#
#   python tools/cluster_proposals.py --json output/proposals/coco64_train.json \
#       --image-root datasets/coco64/images --config-file configs/pretrain_box_detr_cpu.py \
#       --output output/proposals/coco64_train_k16.json --num-clusters 16 --max-proposals 20 \
#       --short-edge 320 --max-size 533
#   python train_net.py --config-file configs/pretrain_box_detr_cpu.py
from aligndet_d2.modeling import FREEZE_ALL

from .common.cpu import cpu_pretrain
from .common.detr import lite_detr
from .pretrain_box_detr import dataloader, lr_multiplier, model, optimizer, train

lite_detr(model.detector)
model.detector.backbone.freeze_at = FREEZE_ALL
model.detector.num_classes = 16
# See pretrain_box_faster_rcnn_cpu.py: 0.996 suits the paper's run length, not 192 iterations.
model.base_momentum = 0.97
cpu_pretrain(
    dataloader, optimizer, train, lr_multiplier, paper_lr=1e-4, max_proposals=20, name="detr"
)
dataloader.train.dataset.json_file = "output/proposals/coco64_train_k16.json"
# AdamW at DETR's fine-tune lr, not scaled down to the batch of 2 as the SGD configs' lr is (the
# reference's 2e-4 x batch / 64 would be 6e-6); a choice of ours, not tuned.
optimizer.lr = 1e-4
