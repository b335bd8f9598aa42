# DETR models and optimizer (Carion et al. 2020): the paper's R-50 DETR and a CPU-sized one on
# EfficientNet-Lite0. Used by finetune_detr*.py and pretrain_box_detr*.py.
from functools import partial

from detectron2.config import LazyCall as L
from detectron2.modeling.backbone import BasicStem, ResNet
from detectron2.solver import get_default_optimizer_params

from aligndet_d2.modeling.detr import DETR, DETRTransformer, HungarianMatcher, SetCriterion
from aligndet_d2.solver import ClipGradAdamW, backbone_lr_factor

# torchvision's R-50 (DETR's backbone) in Detectron2's names: RGB, ImageNet mean and std, the
# stride in the 3x3 conv; stem and res2 frozen as DETR freezes them.
model = L(DETR)(
    backbone=L(ResNet)(
        stem=L(BasicStem)(in_channels=3, out_channels=64, norm="FrozenBN"),
        stages=L(ResNet.make_default_stages)(depth=50, stride_in_1x1=False, norm="FrozenBN"),
        out_features=["res5"],
        freeze_at=2,
    ),
    in_feature="res5",
    transformer=L(DETRTransformer)(
        d_model=256,
        nhead=8,
        num_encoder_layers=6,
        num_decoder_layers=6,
        dim_feedforward=2048,
        dropout=0.1,
    ),
    num_classes=80,
    num_queries=100,
    criterion=L(SetCriterion)(
        num_classes="${..num_classes}",
        matcher=L(HungarianMatcher)(cost_class=1.0, cost_bbox=5.0, cost_giou=2.0),
        eos_coef=0.1,
        loss_class=1.0,
        loss_bbox=5.0,
        loss_giou=2.0,
    ),
    pixel_mean=[123.675, 116.28, 103.53],
    pixel_std=[58.395, 57.12, 57.375],
    input_format="RGB",
)

# AdamW, lr 1e-4 (the backbone x0.1), weight decay 1e-4 on every parameter, gradient norm <= 0.1.
optimizer = L(ClipGradAdamW)(
    params=L(get_default_optimizer_params)(
        base_lr="${..lr}",
        weight_decay_norm=None,
        lr_factor_func=partial(backbone_lr_factor, factor=0.1),
    ),
    lr=1e-4,
    weight_decay=1e-4,
    max_norm=0.1,
)
