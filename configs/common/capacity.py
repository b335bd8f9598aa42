# Proper Reuse's capacity knobs (DESIGN.md 3): with the backbone frozen, the rest of the detector
# must hold the capacity that fine-tuning the backbone would have added: a wider FPN, more RPN
# convs, a deeper box head (`wide_faster_rcnn`, the `_wide` variants) or Cascade R-CNN's three box
# heads (`cascade_heads`, the `cascade_rcnn` configs; `contrastive_cascade_heads` for
# pre-training). Each knob is a plain field of the model config. A wide pre-training uses the same
# knobs as the wide fine-tune, so that its export loads.
import copy
from typing import Sequence

from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.roi_heads import CascadeROIHeads

from aligndet_d2.modeling import ContrastiveCascadeROIHeads


def wide_faster_rcnn(
    model, *, fpn_channels: int, rpn_convs: int, box_convs: int, box_conv_dim: int
):
    """Widens a Faster R-CNN model config (a detector, or ``model.detector`` of pre-training).

    Args:
        fpn_channels: FPN output channels, also the RPN convs' width and the box head's input.
        rpn_convs: 3x3 convs of the RPN head (Detectron2's default: 1).
        box_convs: convs of the box head before its fc layers, each ``box_conv_dim`` wide.
    """
    model.backbone.out_channels = fpn_channels
    model.proposal_generator.head.update(
        in_channels=fpn_channels, conv_dims=[fpn_channels] * rpn_convs
    )
    model.roi_heads.box_head.update(
        input_shape=ShapeSpec(channels=fpn_channels, height=7, width=7),
        conv_dims=[box_conv_dim] * box_convs,
    )
    return model


def cascade_heads(model, *, ious: Sequence[float] = (0.5, 0.6, 0.7)):
    """Turns a Faster R-CNN model config (a detector, or ``model.detector`` of pre-training) into
    Cascade R-CNN (Cai & Vasconcelos, 2018): one box head and class-agnostic predictor per stage,
    each a copy of the config's own, stage k matching proposals at IoU ``ious[k]`` with
    Detectron2's box-regression weights for that stage. The result is Detectron2's
    ``CascadeROIHeads``, as in its model-zoo ``cascade_rcnn.py``; pre-training configs then set
    ``ContrastiveCascadeROIHeads``.
    """
    roi = model.roi_heads
    head, predictor, matcher = (
        roi.pop(k) for k in ("box_head", "box_predictor", "proposal_matcher")
    )
    heads, predictors, matchers = [], [], []
    for k, iou in enumerate(ious):
        heads.append(copy.deepcopy(head))
        p = copy.deepcopy(predictor)
        w = 10.0 * (k + 1)  # Detectron2's (10, 10, 5, 5), (20, 20, 10, 10), (30, 30, 15, 15)
        p.box2box_transform = L(Box2BoxTransform)(weights=(w, w, w / 2, w / 2))
        if "num_classes" in p:  # a classifier (not pre-training's projection, agnostic already)
            p.cls_agnostic_bbox_reg = True
            p.num_classes = "${...num_classes}"  # roi_heads.num_classes, from inside the list
        predictors.append(p)
        m = copy.deepcopy(matcher)
        m.update(thresholds=[iou], labels=[0, 1], allow_low_quality_matches=False)
        matchers.append(m)
    roi.update(
        _target_=CascadeROIHeads,
        box_heads=heads,
        box_predictors=predictors,
        proposal_matchers=matchers,
    )
    return model


def contrastive_cascade_heads(detector, *, rois_per_image: int):
    """Turns a Faster R-CNN pre-training detector config into the Cascade R-CNN one
    (``ContrastiveCascadeROIHeads``): three stages of the detector's own head and projection,
    stage 1 sampling ``rois_per_image`` at 25 % foreground, losses weighted 1 / 0.5 / 0.25, box
    losses smooth L1 with beta 1 as the reference HTC's."""
    cascade_heads(detector)
    roi = detector.roi_heads
    roi.pop("always_keep_gt")  # the R-CNN pre-training's foreground-only sampling
    roi.update(
        _target_=ContrastiveCascadeROIHeads,
        batch_size_per_image=rois_per_image,
        positive_fraction=0.25,
        stage_loss_weights=(1.0, 0.5, 0.25),
    )
    for predictor in roi.box_predictors:
        predictor.smooth_l1_beta = 1.0  # the reference HTC's SmoothL1Loss(beta=1.0)
    return detector
