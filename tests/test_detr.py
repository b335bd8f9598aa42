"""DETR in Detectron2: the matcher against brute force, the set loss against hand-computed values,
the position encoding, and the CPU model's training and inference outputs."""

import itertools
import math

import pytest
import torch
from conftest import CONFIGS
from detectron2.config import LazyConfig, instantiate
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage
from torchvision.ops import box_convert, generalized_box_iou

from aligndet_d2.modeling.detr import HungarianMatcher, PositionEmbeddingSine, SetCriterion


def _boxes(n, g):
    cxcy = torch.rand(n, 2, generator=g) * 0.6 + 0.2
    wh = torch.rand(n, 2, generator=g) * 0.3 + 0.05
    return torch.cat([cxcy, wh], 1)


def _cost(pb, tb, logits, labels, wc, wb, wg):
    giou = generalized_box_iou(box_convert(pb, "cxcywh", "xyxy"), box_convert(tb, "cxcywh", "xyxy"))
    c = wb * torch.cdist(pb, tb, p=1) - wg * giou
    if wc:
        c = c - wc * logits.softmax(-1)[:, labels]
    return c


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("weights", [(1.0, 5.0, 2.0), (0.0, 5.0, 2.0)])
def test_matcher_finds_the_brute_force_optimum(seed, weights):
    g = torch.Generator().manual_seed(seed)
    q, t = 5, 3
    pb, tb = _boxes(q, g), _boxes(t, g)
    logits, labels = torch.randn(q, 4, generator=g), torch.randint(0, 3, (t,), generator=g)
    ((qi, ti),) = HungarianMatcher(*weights)(pb[None], [tb], logits[None], [labels])
    cost = _cost(pb, tb, logits, labels, *weights)
    best = min(
        sum(cost[p, j] for j, p in enumerate(perm)) for perm in itertools.permutations(range(q), t)
    )
    assert len(qi) == t and sorted(ti.tolist()) == list(range(t))
    assert cost[qi, ti].sum().item() == pytest.approx(best.item(), abs=1e-5)


def test_instance_match_never_reads_class_scores():
    g = torch.Generator().manual_seed(0)
    pb, tb = _boxes(6, g), _boxes(4, g)
    boxes_only = HungarianMatcher(cost_class=0.0, cost_bbox=5.0, cost_giou=2.0)
    a = boxes_only(pb[None], [tb])  # no logits at all
    b = boxes_only(pb[None], [tb], torch.randn(1, 6, 9), [torch.tensor([0, 8, 3, 1])])
    assert all(torch.equal(x, y) for x, y in zip(a[0], b[0]))


def test_set_loss_matches_hand_computed_values():
    # Query 0 predicts (0.5, 0.5, 0.2, 0.2), query 1 a far box; one target (0.5, 0.5, 0.4, 0.4),
    # class 1 of K = 2. Matching: query 0. L1 = 0.2 + 0.2 = 0.4; IoU = 0.04 / 0.16 = 0.25, and the
    # enclosing box is the target, so GIoU = 0.25.
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.1, 0.1, 0.05, 0.05]]])
    logits = torch.tensor([[[0.0, 2.0, 0.0], [1.0, 0.0, 3.0]]])
    crit = SetCriterion(num_classes=2, matcher=HungarianMatcher(), eos_coef=0.1)
    losses = crit(
        logits[None], boxes[None], [torch.tensor([1])], [torch.tensor([[0.5, 0.5, 0.4, 0.4]])]
    )
    # Cross-entropy, targets (1, no-object = 2), weights (1, 0.1), weighted mean.
    lp = logits[0].log_softmax(-1)
    ce = (1.0 * -lp[0, 1] + 0.1 * -lp[1, 2]) / (1.0 + 0.1)
    assert losses["loss_ce"].item() == pytest.approx(ce.item(), rel=1e-6)
    assert losses["loss_bbox"].item() == pytest.approx(5 * 0.4, rel=1e-6)
    assert losses["loss_giou"].item() == pytest.approx(2 * (1 - 0.25), rel=1e-6)


def test_aux_losses_on_every_decoder_layer():
    g = torch.Generator().manual_seed(1)
    crit = SetCriterion(num_classes=3, matcher=HungarianMatcher())
    logits, boxes = torch.randn(3, 2, 4, 4, generator=g), torch.rand(3, 2, 4, 4, generator=g)
    boxes[..., 2:] = boxes[..., 2:] * 0.3 + 0.05
    labels, targets = [torch.tensor([0]), torch.tensor([2, 1])], [_boxes(1, g), _boxes(2, g)]
    out = crit(logits, boxes, labels, targets)
    names = ("loss_ce", "loss_bbox", "loss_giou")
    assert set(out) == {f"{k}{s}" for k in names for s in ("", "_0", "_1")}
    # Each layer is matched and weighted on its own, normalised by the 3 targets of the batch.
    for layer, suffix in ((0, "_0"), (1, "_1"), (2, "")):
        own, _ = crit.layer_losses(logits[layer], boxes[layer], labels, targets, 3.0)
        for k in names:
            assert out[k + suffix].item() == pytest.approx(own[k].item(), rel=1e-6)


def test_sine_position_encoding_follows_the_unpadded_extent():
    mask = torch.zeros(1, 4, 6, dtype=torch.bool)
    mask[:, :, 4:] = True  # two padded columns
    pos = PositionEmbeddingSine(8)(mask)
    assert pos.shape == (1, 16, 4, 6)
    # y channel 0 is sin(2 pi (row + 1) / 4); x channel 1 is cos(2 pi (col + 1) / 4) (dim_t = 1).
    assert pos[0, 0, 1, 0].item() == pytest.approx(math.sin(2 * math.pi * 2 / 4), abs=1e-5)
    assert pos[0, 9, 0, 2].item() == pytest.approx(math.cos(2 * math.pi * 3 / 4), abs=1e-5)


def _batch():
    g = torch.Generator().manual_seed(0)
    out = []
    for h, w in ((160, 224), (192, 160)):
        inst = Instances((h, w))
        inst.gt_boxes = Boxes(torch.tensor([[10.0, 20.0, 90.0, 120.0], [50.0, 40.0, 150.0, 150.0]]))
        inst.gt_classes = torch.tensor([3, 7])
        out.append(
            {
                "image": torch.randint(0, 256, (3, h, w), generator=g).float(),
                "instances": inst,
                "height": 2 * h,
                "width": 2 * w,
            }
        )
    return out


def test_cpu_detr_trains_and_predicts():
    cfg = LazyConfig.load(str(CONFIGS / "finetune_detr_cpu.py"))
    cfg.model.backbone.pretrained = False
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    batch = _batch()
    with EventStorage():
        losses = model(batch)
    assert set(losses) == {
        f"{k}{s}" for k in ("loss_ce", "loss_bbox", "loss_giou") for s in ("", "_0")
    }
    sum(losses.values()).backward()
    assert model.query_embed.weight.grad is not None and model.class_embed.weight.grad is not None
    model.eval()
    with torch.no_grad():
        out = model(batch)
    for d, r in zip(batch, out):
        inst = r["instances"]
        assert len(inst) == 30 and inst.image_size == (d["height"], d["width"])  # original size
        b = inst.pred_boxes.tensor
        assert (b[:, 0] >= 0).all() and (b[:, 2] <= d["width"]).all()
        assert ((inst.scores > 0) & (inst.scores < 1)).all() and (inst.pred_classes < 80).all()


def test_clip_grad_adamw_clips_the_global_norm_before_its_step():
    from aligndet_d2.solver import ClipGradAdamW

    a, b = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(4))
    opt = ClipGradAdamW([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=1.0, max_norm=0.1)
    a.grad, b.grad = torch.full((3,), 3.0), torch.full((4,), -4.0)
    opt.step()
    total = torch.cat([a.grad, b.grad]).norm().item()
    assert total == pytest.approx(0.1, rel=1e-4)  # across both groups, direction kept
    assert (a.grad > 0).all() and (b.grad < 0).all()
    with pytest.raises(ValueError, match="max_norm"):
        ClipGradAdamW([a], lr=1.0, max_norm=0.0)


def test_a_matcher_with_no_cost_is_refused():
    with pytest.raises(ValueError, match="all costs are 0"):
        HungarianMatcher(cost_class=0.0, cost_bbox=0.0, cost_giou=0.0)


def test_matched_normaliser_divides_the_cross_entropy_by_the_matched_queries():
    # The hand-computed case above with the pre-training's settings: no-object weight 1, the sum
    # over both queries divided by the one matched query (the reference's DETR head).
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.1, 0.1, 0.05, 0.05]]])
    logits = torch.tensor([[[0.0, 2.0, 0.0], [1.0, 0.0, 3.0]]])
    crit = SetCriterion(
        num_classes=2, matcher=HungarianMatcher(), eos_coef=1.0, class_normalizer="matched"
    )
    losses = crit(
        logits[None], boxes[None], [torch.tensor([1])], [torch.tensor([[0.5, 0.5, 0.4, 0.4]])]
    )
    lp = logits[0].log_softmax(-1)
    assert losses["loss_ce"].item() == pytest.approx((-lp[0, 1] - lp[1, 2]).item(), rel=1e-6)
    with pytest.raises(ValueError, match="class_normalizer='all'"):
        SetCriterion(num_classes=2, matcher=HungarianMatcher(), class_normalizer="all")


class _FixedFeatures(torch.nn.Module):
    """A backbone that returns a given ``res5`` map whatever the images."""

    def __init__(self, feat):
        super().__init__()
        self.feat = feat

    def forward(self, x):
        assert x.shape[0] == self.feat.shape[0] and x.shape[-1] // 32 == self.feat.shape[-1]
        return {"res5": self.feat}


def _cpu_detr():
    cfg = LazyConfig.load(str(CONFIGS / "finetune_detr_cpu.py"))
    cfg.model.backbone.pretrained = False
    torch.manual_seed(0)
    return instantiate(cfg.model)


def test_a_padded_image_decodes_as_it_does_alone():
    """Padding masks in the encoder's self-attention and the decoder's cross-attention and the
    position encoding over each image's own extent: the features under the padding do not
    change what the decoder sees of an image."""
    model = _cpu_detr().eval()
    g = torch.Generator().manual_seed(0)
    small = {"image": torch.zeros(3, 160, 224)}  # alone: a 5 x 7 feature map at stride 32
    large = {"image": torch.zeros(3, 192, 256)}  # with it, both are padded to 6 x 8
    alone = torch.randn(1, 320, 5, 7, generator=g)
    both = torch.randn(2, 320, 6, 8, generator=g) * 10  # nonsense under the padding
    both[0, :, :5, :7] = alone[0]
    with torch.no_grad():
        model.backbone = _FixedFeatures(alone)
        images, mask = model.preprocess([small])
        assert not mask.any()
        hs_a, _, boxes_a = model.decode(images, mask)
        model.backbone = _FixedFeatures(both)
        images, mask = model.preprocess([small, large])
        assert mask[0, :160, :224].logical_not().all() and mask[0, 160:].all()
        assert mask[0, :, 224:].all() and not mask[1].any()
        hs_b, _, boxes_b = model.decode(images, mask)
    assert torch.allclose(hs_b[:, 0], hs_a[:, 0], atol=1e-4)
    assert torch.allclose(boxes_b[:, 0], boxes_a[:, 0], atol=1e-5)


class _Recorder(torch.nn.Module):
    def forward(self, *args):
        self.args = args
        return {"loss_ce": torch.zeros(())}


def test_targets_and_predictions_are_in_each_image_s_own_size_not_the_padded_one():
    model = _cpu_detr()
    batch = _batch()  # 160 x 224 and 192 x 160, shown at twice that size ("height", "width")
    q = model.num_queries
    boxes = torch.rand(1, 2, q, 4, generator=torch.Generator().manual_seed(0)) * 0.4 + 0.3
    logits = torch.randn(1, 2, q, 81, generator=torch.Generator().manual_seed(1))
    model.decode = lambda images, mask: (None, logits, boxes)
    model.criterion = _Recorder()
    with EventStorage():
        model(batch)
    targets = model.criterion.args[3]
    for d, t in zip(batch, targets):
        h, w = d["image"].shape[1:]
        xyxy = d["instances"].gt_boxes.tensor
        expected = box_convert(xyxy, "xyxy", "cxcywh") / torch.tensor([w, h, w, h])
        assert torch.allclose(t, expected, atol=1e-6)
    model.eval()
    with torch.no_grad():
        out = model(batch)
    for i, (d, r) in enumerate(zip(batch, out)):
        h, w = d["image"].shape[1:]
        scale = torch.tensor([w, h, w, h]) * 2  # to the original size
        expected = Boxes(box_convert(boxes[0, i], "cxcywh", "xyxy") * scale)
        expected.clip((2 * h, 2 * w))  # as Detectron2's detector_postprocess does
        got = r["instances"].pred_boxes.tensor
        assert r["instances"].image_size == (2 * h, 2 * w) and len(got) == q
        # Both sorted the same way (the output is in score order).
        got, expected = (
            torch.tensor(sorted(map(tuple, b.tolist()))) for b in (got, expected.tensor)
        )
        assert torch.allclose(got, expected, atol=1e-3)
