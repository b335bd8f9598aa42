"""DETR (Carion et al. 2020) as a Detectron2 meta-architecture on a Detectron2 backbone."""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.modeling import META_ARCH_REGISTRY, Backbone, detector_postprocess
from detectron2.structures import Boxes, ImageList, Instances
from torch import nn
from torchvision.ops import box_convert

from .criterion import SetCriterion
from .position_encoding import PositionEmbeddingSine
from .transformer import DETRTransformer

__all__ = ["DETR", "MLP"]


class MLP(nn.Sequential):
    """``num_layers`` linear layers with ReLU between them (DETR's box head: 3 layers)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int):
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        layers: List[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(nn.Linear(a, b))
            if i < num_layers - 1:
                layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


@META_ARCH_REGISTRY.register()
class DETR(nn.Module):
    """Backbone -> 1x1 projection -> transformer -> class and box heads on every decoder layer.

    Training returns :class:`SetCriterion`'s losses (auxiliary losses on the earlier decoder
    layers); inference returns, per image, the ``num_queries`` predictions with their best
    non-background class, as Detectron2 ``Instances`` at the input's original size.

    Args:
        backbone: a Detectron2 backbone; ``in_feature`` of its outputs is used.
        in_feature: the feature map (DETR: the last stage, ``res5``).
        transformer: the encoder-decoder.
        num_classes: K foreground classes.
        num_queries: object queries (DETR: 100).
        criterion: the set loss.
        pixel_mean, pixel_std: input normalisation, per channel.
        input_format: "RGB" or "BGR", for visualisation and the loaders.
        test_topk: detections kept per image at inference (at most ``num_queries``).
    """

    def __init__(
        self,
        *,
        backbone: Backbone,
        in_feature: str,
        transformer: DETRTransformer,
        num_classes: int,
        num_queries: int,
        criterion: SetCriterion,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        input_format: str = "RGB",
        test_topk: int = 100,
    ):
        super().__init__()
        self.backbone = backbone
        self.in_feature = in_feature
        self.transformer = transformer
        d = transformer.d_model
        shape = backbone.output_shape()[in_feature]
        self.input_proj = nn.Conv2d(shape.channels, d, kernel_size=1)
        self.position = PositionEmbeddingSine(d // 2)
        self.query_embed = nn.Embedding(num_queries, d)
        self.class_embed = nn.Linear(d, num_classes + 1)
        self.bbox_embed = MLP(d, d, 4, 3)
        self.criterion = criterion
        self.num_classes = num_classes
        self.num_queries = num_queries
        self.input_format = input_format
        self.test_topk = test_topk
        self.size_divisibility = max(getattr(backbone, "size_divisibility", 0), shape.stride)
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess(self, batched_inputs: List[Dict]) -> Tuple[ImageList, torch.Tensor]:
        """Normalised, padded images and the (B, H, W) padding mask (True at padding)."""
        images = [
            (d["image"].to(self.device) - self.pixel_mean) / self.pixel_std for d in batched_inputs
        ]
        images = ImageList.from_tensors(images, self.size_divisibility)
        b, _, h, w = images.tensor.shape
        mask = torch.ones((b, h, w), dtype=torch.bool, device=self.device)
        for i, (ih, iw) in enumerate(images.image_sizes):
            mask[i, :ih, :iw] = False
        return images, mask

    def decode(self, images: ImageList, mask: torch.Tensor):
        """Decoder outputs (L, B, Q, d), class logits (L, B, Q, K + 1) and boxes (L, B, Q, 4)."""
        feat = self.backbone(images.tensor)[self.in_feature]
        mask = F.interpolate(mask[None].float(), size=feat.shape[-2:])[0].bool()
        pos = self.position(mask).to(feat.dtype)
        hs, _ = self.transformer(self.input_proj(feat), mask, self.query_embed.weight, pos)
        return hs, self.class_embed(hs), self.bbox_embed(hs).sigmoid()

    @staticmethod
    def normalized_targets(instances: Sequence[Instances]) -> List[torch.Tensor]:
        """Per image, its boxes as (cx, cy, w, h) in [0, 1] of the image (without padding)."""
        out = []
        for inst in instances:
            h, w = inst.image_size
            scale = torch.tensor([w, h, w, h], dtype=torch.float32, device=inst.gt_boxes.device)
            out.append(box_convert(inst.gt_boxes.tensor.float(), "xyxy", "cxcywh") / scale)
        return out

    def forward(self, batched_inputs: List[Dict]):
        images, mask = self.preprocess(batched_inputs)
        _, logits, boxes = self.decode(images, mask)
        if self.training:
            inst = [d["instances"].to(self.device) for d in batched_inputs]
            labels = [i.gt_classes for i in inst]
            return self.criterion(logits, boxes, labels, self.normalized_targets(inst))
        return self.postprocess(logits[-1], boxes[-1], images.image_sizes, batched_inputs)

    def postprocess(self, logits, boxes, image_sizes, batched_inputs) -> List[Dict[str, Instances]]:
        """Per image, the top ``test_topk`` queries by their best foreground class probability."""
        prob = logits.float().softmax(-1)[..., :-1]
        scores, labels = prob.max(-1)
        results = []
        for i, (h, w) in enumerate(image_sizes):
            keep = scores[i].topk(min(self.test_topk, scores.shape[1])).indices
            xyxy = box_convert(boxes[i, keep].float(), "cxcywh", "xyxy")
            xyxy = xyxy * torch.tensor([w, h, w, h], dtype=torch.float32, device=xyxy.device)
            r = Instances((h, w))
            r.pred_boxes = Boxes(xyxy)
            r.scores = scores[i, keep]
            r.pred_classes = labels[i, keep]
            d = batched_inputs[i]
            results.append(
                {"instances": detector_postprocess(r, d.get("height", h), d.get("width", w))}
            )
        return results
