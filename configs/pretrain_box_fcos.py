# AlignDet box-domain pre-training of FCOS R-50-FPN, the paper setting (docs/DESIGN.md 2.4).
#
#   python train_net.py --config-file configs/pretrain_box_fcos.py --num-gpus 8
#
# The class logits become a projection (conv3x3 + conv1x1 -> 256) per point; Detectron2's FCOS
# assignment labels points with proposal ids; 2048 points are sampled per view over the batch,
# positives first (background points are contrastive negatives only); Detectron2's FCOS box (GIoU)
# and centerness losses on the sampled positives. aligndet_d2/modeling/dense.py lists how this
# differs from the reference.
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.model_zoo import get_config

from aligndet_d2.modeling import AlignDetFCOS, ContrastiveFCOSHead, FrozenResNet, MomentumPair

from .common.pretrain import dataloader, lr_multiplier, optimizer, train

detector = get_config("common/models/fcos.py").model
detector._target_ = AlignDetFCOS
detector.backbone.bottom_up._target_ = FrozenResNet
detector.backbone.bottom_up.freeze_at = 5
detector.head = L(ContrastiveFCOSHead)(
    input_shape=[ShapeSpec(channels=256)] * 5,
    conv_dims=[256, 256, 256, 256],
    norm="GN",
    embed_dim=256,
)
detector.samples_per_view = 2048

model = L(MomentumPair)(
    detector=detector,
    temperature=0.5,
    base_momentum=0.996,
    negative_overlap_iou=None,  # e.g. 0.5: overlapping proposals are not negatives (ours, off)
)

optimizer.lr = 0.01
train.output_dir = "output/pretrain_box_fcos"
