# Proper Reuse's capacity knobs (DESIGN.md 3): with the backbone frozen, the rest of the detector
# must hold the capacity that fine-tuning the backbone would have added (a wider FPN, more RPN
# convs, a deeper box head). Each knob is a plain field of the model config; this sets them
# together for the `_wide` variants. Pre-training and fine-tuning use the same knobs, so that the
# export of a wide pre-training loads into the wide fine-tune config.
from detectron2.layers import ShapeSpec


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
