# Proper Reuse's capacity (docs/DESIGN.md 3): with the backbone frozen, the rest of the detector
# must hold the capacity that fine-tuning the backbone would have added: a wider FPN, more RPN
# convs, a deeper box head (plain fields, set by the `_wide` configs themselves) or Cascade R-CNN's
# three box heads (`cascade_roi_heads` here, for the `cascade_rcnn` configs;
# `contrastive_cascade_roi_heads` for pre-training). A wide pre-training uses the same sizes as the
# wide fine-tune, so that its export loads.
import copy
from typing import Sequence

from detectron2.config import LazyCall as L
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.roi_heads import CascadeROIHeads

from aligndet_d2.modeling import ContrastiveCascadeROIHeads


def cascade_roi_heads(roi_heads, *, ious: Sequence[float] = (0.5, 0.6, 0.7)):
    """Cascade R-CNN's (Cai & Vasconcelos, 2018) ROI heads made from a Faster R-CNN ROI-heads
    config: one box head and class-agnostic predictor per stage, each a copy of the config's own,
    stage k matching proposals at IoU ``ious[k]`` with Detectron2's box-regression weights for that
    stage. Returns Detectron2's ``CascadeROIHeads``, as in its model-zoo ``cascade_rcnn.py``;
    ``roi_heads`` is left as it was.
    """
    roi = copy.deepcopy(roi_heads)
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
    return roi


def contrastive_cascade_roi_heads(roi_heads, *, rois_per_image: int):
    """The Cascade R-CNN pre-training ROI heads (``ContrastiveCascadeROIHeads``) made from the
    Faster R-CNN pre-training ones: three stages of their own head and projection, stage 1
    sampling ``rois_per_image`` at 25 % foreground, losses weighted 1 / 0.5 / 0.25, box losses
    smooth L1 with beta 1 as the reference HTC's."""
    roi = cascade_roi_heads(roi_heads)
    roi.pop("always_keep_gt")  # the R-CNN pre-training's foreground-only sampling
    roi.update(
        _target_=ContrastiveCascadeROIHeads,
        batch_size_per_image=rois_per_image,
        positive_fraction=0.25,
        stage_loss_weights=(1.0, 0.5, 0.25),
    )
    for predictor in roi.box_predictors:
        predictor.smooth_l1_beta = 1.0  # the reference HTC's SmoothL1Loss(beta=1.0)
    return roi
