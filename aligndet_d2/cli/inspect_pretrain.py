"""Command line: what a pre-trained detector learned, in pictures.

For each image: on the left its proposals (the pseudo ground truth of pre-training), on the right
the online detector's boxes, each drawn in the colour and with the id of the proposal it overlaps
most (IoU >= 0.5), grey otherwise. R-CNN: the RPN's top proposals refined by the pre-trained box
regressor (Cascade R-CNN: by every stage in turn). DETR: the queries least sure of "no object".
RetinaNet / FCOS (no objectness to rank boxes by): for each proposal, the box regressed
from the anchor / point assigned to it that lies nearest its centre.

Example::

    python tools/inspect_pretrain.py --config-file configs/pretrain_box_faster_rcnn_cpu.py \\
        --checkpoint output/pretrain_box_faster_rcnn_cpu/model_final.pth \\
        --proposals output/proposals/coco64_train.json --image-root datasets/coco64/images \\
        --output-dir output/inspect
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

import numpy as np
import torch

__all__ = ["main", "predict_boxes", "predict_dense_boxes", "predict_detr_boxes"]


@torch.no_grad()
def predict_boxes(detector, image: torch.Tensor, top_k: int) -> np.ndarray:
    """The detector's boxes for one image: top-k RPN proposals refined by the box regressor.

    Args:
        detector: an :class:`~aligndet_d2.modeling.AlignDetRCNN` in eval mode.
        image: (C, H, W) uint8 image in the detector's input format.
        top_k: number of boxes.

    Returns:
        (K, 4) XYXY boxes in the image's pixels.
    """
    from detectron2.structures import Boxes

    images = detector.preprocess_image([{"image": image}])
    features = detector.backbone(images.tensor)
    proposals, _ = detector.proposal_generator(images, features, None)
    boxes = proposals[0].proposal_boxes[:top_k]
    heads = detector.roi_heads
    feats = [features[f] for f in heads.box_in_features]
    boxes = boxes.tensor
    # Cascade R-CNN: each stage refines the previous stage's boxes; the last stage's are shown.
    stages = getattr(heads, "num_cascade_stages", None)
    pairs = (
        zip(heads.box_head, heads.box_predictor)
        if stages
        else [(heads.box_head, heads.box_predictor)]
    )
    for head, predictor in pairs:
        _, deltas = predictor(head(heads.box_pooler(feats, [Boxes(boxes)])))
        boxes = predictor.box2box_transform.apply_deltas(deltas, boxes)
    return boxes.clamp(min=0).numpy()


@torch.no_grad()
def predict_detr_boxes(detector, image: torch.Tensor, top_k: int) -> np.ndarray:
    """A DETR's boxes for one image: the last decoder layer's ``top_k`` queries, ranked by how
    little they predict "no object".

    Args:
        detector: an :class:`~aligndet_d2.modeling.detr.AlignDetDETR` in eval mode.
        image: (C, H, W) uint8 image in the detector's input format.
        top_k: number of boxes.

    Returns:
        (K, 4) XYXY boxes in the image's pixels.
    """
    from torchvision.ops import box_convert

    images, mask = detector.preprocess([{"image": image}])
    _, logits, boxes = detector.decode(images, mask)
    objectness = 1 - logits[-1, 0].softmax(-1)[:, -1]
    keep = objectness.topk(min(top_k, len(objectness))).indices
    h, w = images.image_sizes[0]
    xyxy = box_convert(boxes[-1, 0, keep], "cxcywh", "xyxy") * torch.tensor([w, h, w, h])
    return xyxy.numpy()


@torch.no_grad()
def predict_dense_boxes(detector, image: torch.Tensor, proposals: np.ndarray) -> np.ndarray:
    """A RetinaNet / FCOS detector's box for each proposal: the box regressed from the anchor
    (point) assigned to the proposal whose centre is nearest the proposal's centre.

    Args:
        detector: an :class:`~aligndet_d2.modeling.AlignDetRetinaNet` or
            :class:`~aligndet_d2.modeling.AlignDetFCOS` in eval mode.
        image: (C, H, W) uint8 image in the detector's input format.
        proposals: (P, 4) XYXY proposals in the image's pixels.

    Returns:
        (P, 4) XYXY boxes; NaN rows for proposals that no anchor is assigned to.
    """
    from detectron2.modeling.meta_arch.dense_detector import permute_to_N_HWA_K
    from detectron2.structures import Boxes, Instances

    images = detector.preprocess_image([{"image": image}])
    features = detector.backbone(images.tensor)
    features = [features[f] for f in detector.head_in_features]
    anchors = detector.anchor_generator(features)
    inst = Instances(images.image_sizes[0])
    inst.gt_boxes = Boxes(torch.as_tensor(proposals, dtype=torch.float32).reshape(-1, 4))
    inst.gt_ids = torch.arange(len(proposals))
    ids = detector.label_anchors_with_ids(anchors, [inst])[0][0]  # (R,)
    deltas = torch.cat(
        [permute_to_N_HWA_K(x, 4) for x in detector.head.box_outputs(features)[0]], 1
    )
    all_anchors = Boxes.cat(anchors)
    out = np.full((len(proposals), 4), np.nan, dtype=np.float32)
    centres = all_anchors.get_centers()
    for i, c in enumerate(inst.gt_boxes.get_centers()):
        idx = torch.nonzero(ids == i).squeeze(1)
        if len(idx):
            best = idx[(centres[idx] - c).norm(dim=1).argmin()][None]  # (1,)
            box = detector.box2box_transform.apply_deltas(deltas[0, best], all_anchors.tensor[best])
            out[i] = box[0].numpy()
    return out


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="inspect_pretrain.py", description=__doc__.splitlines()[0])
    p.add_argument("--config-file", required=True, help="the pre-training config")
    p.add_argument("--checkpoint", required=True, help="pre-training checkpoint")
    p.add_argument("--proposals", required=True, help="proposals json of the images")
    p.add_argument("--image-root", required=True)
    p.add_argument("--output-dir", required=True)
    p.add_argument("--num-images", type=int, default=4)
    p.add_argument(
        "--top-k",
        type=int,
        default=15,
        help="detector boxes per image (RetinaNet / FCOS: one for each of the first k proposals)",
    )
    p.add_argument("--max-proposals", type=int, default=32, help="proposals drawn per image")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="key=value config overrides")
    args = p.parse_args(argv)

    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import LazyConfig, instantiate
    from detectron2.data import transforms as T
    from detectron2.data.detection_utils import read_image
    from detectron2.structures import Boxes, pairwise_iou

    from ..data.datasets import load_proposals_json
    from ..modeling.dense import AlignDetFCOS, AlignDetRetinaNet
    from ..modeling.detr import AlignDetDETR
    from ..modeling.rcnn import AlignDetRCNN
    from ..utils.visualize import draw_boxes, id_colors, save_picture

    cfg = LazyConfig.apply_overrides(LazyConfig.load(args.config_file), args.opts)
    pair = instantiate(cfg.model)
    dense = isinstance(pair.online, (AlignDetRetinaNet, AlignDetFCOS))
    detr = isinstance(pair.online, AlignDetDETR)
    if not (dense or detr or isinstance(pair.online, AlignDetRCNN)):
        print(
            f"error: {args.config_file}: not an R-CNN, Cascade R-CNN, RetinaNet, FCOS or DETR "
            "pre-training config",
            file=sys.stderr,
        )
        return 1
    DetectionCheckpointer(pair).load(args.checkpoint)
    detector = pair.online.eval()
    fmt = cfg.dataloader.train.mapper.image_format
    short = max(cfg.dataloader.train.mapper.short_edge_lengths)
    resize = T.ResizeShortestEdge(short, cfg.dataloader.train.mapper.max_size)
    for d in load_proposals_json(args.proposals, args.image_root)[: args.num_images]:
        rgb = read_image(d["file_name"], format="RGB")
        tf = resize.get_transform(rgb)
        img = tf.apply_image(rgb)
        net_in = torch.as_tensor(img if fmt == "RGB" else img[:, :, ::-1].copy()).permute(2, 0, 1)
        props = np.asarray(
            [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in d["annotations"])]
        )[: args.max_proposals]
        props = tf.apply_box(props)
        if dense:
            pred = predict_dense_boxes(detector, net_in, props[: args.top_k])
            pred = pred[~np.isnan(pred).any(1)]
        elif detr:
            pred = predict_detr_boxes(detector, net_in, args.top_k)
        else:
            pred = predict_boxes(detector, net_in, args.top_k)
        iou = pairwise_iou(Boxes(torch.as_tensor(pred)), Boxes(torch.as_tensor(props))).numpy()
        best = iou.argmax(1) if iou.size else np.zeros(len(pred), dtype=int)
        hit = iou.max(1) >= 0.5 if iou.size else np.zeros(len(pred), dtype=bool)
        left = draw_boxes(img, props)
        labels = [str(b) if h else "-" for b, h in zip(best, hit)]
        colors = [id_colors([b])[0] if h else (0.6, 0.6, 0.6) for b, h in zip(best, hit)]
        right = draw_boxes(img, pred, labels=labels, colors=colors)
        canvas = np.concatenate([left, np.full((left.shape[0], 8, 3), 255, np.uint8), right], 1)
        out = save_picture(canvas, args.output_dir, d["file_name"], "pretrained")
        print(f"wrote {out}: {int(hit.sum())} of {len(pred)} boxes match a proposal (IoU >= 0.5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
