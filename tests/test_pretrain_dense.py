"""RetinaNet and FCOS pre-training: projections, ids, sampling, flattening order, steps."""

import numpy as np
import pytest
import torch
from conftest import pretrain_cfg
from detectron2.config import instantiate
from detectron2.structures import Boxes, BoxMode, Instances
from detectron2.utils.events import EventStorage

from aligndet_d2.modeling import BACKGROUND_ID, MomentumPair
from aligndet_d2.modeling.dense import best_per_id, sample_dense


def permute_all(maps, k):
    from detectron2.modeling.meta_arch.dense_detector import permute_to_N_HWA_K

    return torch.cat([permute_to_N_HWA_K(x, k) for x in maps], dim=1)


TESTED = ["retinanet", "fcos"]


def _cfg(det, extra=()):
    return pretrain_cfg(det, extra, short_edge=160, max_size=256)


@pytest.fixture(scope="module", params=TESTED)
def pair(request):
    torch.manual_seed(0)
    return request.param, instantiate(_cfg(request.param).model)


def _inst(boxes, ids, size=(128, 160)):
    inst = Instances(size)
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.gt_ids = torch.tensor(ids, dtype=torch.int64)
    return inst


def test_embed_at_equals_the_full_maps(pair):
    det, model = pair
    head = model.online.head
    torch.manual_seed(1)
    feats = [torch.randn(2, 128, s, s + 2) for s in (8, 4, 2, 2, 1)]
    full = permute_all(head(feats)[0], head.embed_dim)  # (2, R, D)
    index = torch.randperm(full.shape[0] * full.shape[1])[:50]
    got = head.embed_at(head.embed_features(feats), index)
    torch.testing.assert_close(got, full.reshape(-1, head.embed_dim)[index], rtol=1e-4, atol=1e-5)


def _embed_at_per_anchor(head, feats, index):
    """The definition, one sample at a time: the last projection layer's slice of the sample's
    anchor applied to the feature vector at the sample's image, level and position."""
    a_num, d = head.num_anchors, head.embed_dim
    weight = head.projector[-1].weight.view(a_num, d, -1)
    bias = head.projector[-1].bias.view(a_num, d)
    sizes = [f.shape[2] * f.shape[3] * a_num for f in feats]
    rows = []
    for i in index.tolist():
        img, r = divmod(i, sum(sizes))
        level = 0
        while r >= sizes[level]:
            r -= sizes[level]
            level += 1
        pos, a = divmod(r, a_num)
        h, w = divmod(pos, feats[level].shape[3])
        rows.append(weight[a] @ feats[level][img, :, h, w] + bias[a])
    return torch.stack(rows)


def test_embed_at_equals_a_per_anchor_reference_with_its_gradients(pair):
    det, model = pair
    head = model.online.head
    torch.manual_seed(2)
    feats = [torch.randn(2, 128, s, s + 1, requires_grad=True) for s in (6, 3, 2, 1, 1)]
    total = 2 * sum(f.shape[2] * f.shape[3] for f in feats) * head.num_anchors
    # Every level and anchor, both images, repeated indices, out of order.
    index = torch.cat([torch.randperm(total)[:120], torch.tensor([0, total - 1, 0])])
    got = head.embed_at(feats, index)
    ref = _embed_at_per_anchor(head, feats, index)
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)
    g = torch.randn_like(ref)
    params = [head.projector[-1].weight, head.projector[-1].bias, *feats]
    grads = torch.autograd.grad((got * g).sum(), params)
    ref_grads = torch.autograd.grad((ref * g).sum(), params)
    # The weight's gradient sums over the ~120 samples in another order: float32 rounding of
    # such a sum is ~1e-6 of its terms.
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert head.embed_at(feats, index[:0]).shape == (0, head.embed_dim)


def test_projection_shapes(pair):
    det, model = pair
    head = model.online.head
    feats = [torch.randn(2, 128, s, s + 2) for s in (16, 8, 4, 2, 1)]
    out = head(feats)
    a = 9 if det == "retinanet" else 1
    for level, f in enumerate(feats):
        assert out[0][level].shape == (2, a * 256, f.shape[2], f.shape[3])
        assert out[1][level].shape == (2, a * 4, f.shape[2], f.shape[3])
    assert not hasattr(head, "cls_score")


def test_retinanet_id_assignment_by_hand():
    model = instantiate(_cfg("retinanet").model).online
    anchors = [
        Boxes(
            torch.tensor(
                [
                    [0.0, 0, 32, 32],  # IoU 1 with the box: its id
                    [4, 4, 36, 36],  # IoU 784 / 1264 = 0.62: its id
                    [6, 6, 38, 38],  # IoU 676 / 1372 = 0.49: ignored
                    [8, 8, 40, 40],  # IoU 576 / 1472 = 0.39: background
                    [100, 100, 132, 132],  # background
                ]
            )
        )
    ]
    ids, boxes, valid = model.label_anchors_with_ids(anchors, [_inst([[0, 0, 32, 32]], [5])])
    assert ids[0].tolist() == [5, 5, BACKGROUND_ID, BACKGROUND_ID, BACKGROUND_ID]
    assert valid[0].tolist() == [True, True, False, True, True]
    torch.testing.assert_close(boxes[0, 1], torch.tensor([0.0, 0, 32, 32]))


def test_fcos_id_assignment_by_hand():
    model = instantiate(_cfg("fcos").model).online
    # One level of stride 8: points (as 8 x 8 boxes) at centres 4, 12, ..., on a 64 x 64 image.
    centres = torch.arange(4.0, 64, 8)
    cy, cx = torch.meshgrid(centres, centres, indexing="ij")
    pts = torch.stack([cx - 4, cy - 4, cx + 4, cy + 4], -1).reshape(-1, 4)
    # FCOS on one level: no size range at the first (and last) level; centre sampling: a point must
    # lie less than 1.5 strides = 12 px from the box centre (32, 32), and inside the box.
    ids, _, _ = model.label_anchors_with_ids([Boxes(pts)], [_inst([[16, 16, 48, 48]], [3])])
    grid = ids[0].reshape(8, 8)
    expected = torch.full((8, 8), BACKGROUND_ID)
    expected[3:5, 3:5] = 3  # centres 28 and 36; 20 and 44 are exactly 12 px away
    assert torch.equal(grid, expected)


def test_best_sample_per_id_by_hand():
    ids = torch.tensor([3, BACKGROUND_ID, 3, 5, 5, 3, 7])
    quality = torch.tensor([0.2, 0.9, 0.6, 0.4, 0.4, 0.6, float("nan")])
    # id 3: 0.6 at 2 and 5, the first wins; id 5: a tie, the first; id 7: no valid quality.
    assert best_per_id(ids, quality).nonzero().squeeze(1).tolist() == [2, 3]
    assert not best_per_id(torch.full((3,), BACKGROUND_ID), torch.ones(3)).any()


@pytest.mark.parametrize("det", TESTED)
def test_fixed_set_is_one_best_match_per_proposal(det):
    model = instantiate(_cfg(det).model).online
    boxes = [[24.0, 24, 88, 72], [70, 60, 120, 124]]
    batch = [
        {"image": torch.zeros(3, 128, 128, dtype=torch.uint8), "instances": _inst(boxes, [0, 1])}
    ]
    with EventStorage():
        _, samples = model.forward_pretrain(batch, with_losses=False)
    assert (samples.ids == 0).sum() > 1 and (samples.ids == 1).sum() > 1
    assert sorted(samples.ids[samples.fixed].tolist()) == [0, 1]
    # The quality that picks it, by hand: RetinaNet the anchor's IoU with its box, FCOS the
    # centerness of the point in its box (sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))).
    anchors = torch.tensor([[24.0, 24, 88, 72], [40, 24, 104, 72], [48, 40, 56, 48]])
    box = torch.tensor([[24.0, 24, 88, 72]]).expand(3, 4)
    got = model.match_quality(anchors, box)
    if det == "retinanet":
        expected = [1.0, 48 * 48 / (80 * 48), 64 / (64 * 48)]
    else:  # points at the centres (56, 48), (72, 48), (52, 44)
        expected = [1.0, (16 / 48) ** 0.5, ((28 / 36) * (20 / 28)) ** 0.5]
    torch.testing.assert_close(got, torch.tensor(expected))


def test_sampling_caps_and_fill():
    ids = torch.tensor([0, 1, 2, 3, BACKGROUND_ID, BACKGROUND_ID, BACKGROUND_ID, 4])
    valid = torch.tensor([True] * 6 + [False, True])
    keep = sample_dense(ids, 3, valid)
    assert len(keep) == 3 and (ids[keep] >= 0).all()  # positives first, capped
    keep = sample_dense(ids, 7, valid)
    assert sorted(ids[keep].tolist()) == [BACKGROUND_ID, BACKGROUND_ID, 0, 1, 2, 3, 4]
    assert 6 not in keep.tolist()  # ignored
    assert len(sample_dense(ids, 100, valid)) == 7


def _tag_maps(features):
    """Per level (N, 4, H, W) maps whose channels hold (image, level, y, x) of each location."""
    maps = []
    for level, f in enumerate(features):
        n, _, h, w = f.shape
        img = torch.arange(n).view(n, 1, 1).expand(n, h, w)
        y = torch.arange(h).view(1, h, 1).expand(n, h, w)
        x = torch.arange(w).view(1, 1, w).expand(n, h, w)
        maps.append(torch.stack([img, torch.full_like(img, level), y, x], 1).float())
    return maps


@pytest.mark.parametrize("det", TESTED)
def test_flattening_keeps_images_apart(det):
    """Two images of different sizes: every sampled embedding must come from its id's image."""
    model = instantiate(_cfg(det).model).online
    head = model.head
    # Tag maps in place of the tower, and an identity last projection layer for every anchor: each
    # sampled embedding then says where (image, level, y, x) it was taken from.
    head.embed_features = _tag_maps
    head.embed_dim = 4
    head.projector[-1] = torch.nn.Conv2d(4, 4 * head.num_anchors, 1)
    with torch.no_grad():
        head.projector[-1].weight.copy_(torch.eye(4).repeat(head.num_anchors, 1)[..., None, None])
        head.projector[-1].bias.zero_()
    batch = []
    for i, (h, w) in enumerate([(160, 224), (192, 128)]):
        inst = _inst([[10, 10, 90, 90], [40, 20, 120, 100]], [2 * i, 2 * i + 1], (h, w))
        batch.append({"image": torch.zeros(3, h, w, dtype=torch.uint8), "instances": inst})
    with EventStorage():
        _, samples = model.forward_pretrain(batch, with_losses=False)
    emb, ids = samples.emb, samples.ids
    pos = ids >= 0
    # The fixed set: one positive per proposal.
    assert not (samples.fixed & ~pos).any()
    assert sorted(ids[samples.fixed].tolist()) == sorted(set(ids[pos].tolist())) == [0, 1, 2, 3]
    assert pos.sum() > 10
    # Image 0 owns ids 0, 1; image 1 owns 2, 3.
    torch.testing.assert_close(emb[pos, 0], (ids[pos] // 2).float())


def test_proposals_matching_no_point_give_background_only():
    """A box between FCOS points (none inside it): background samples, finite losses, a count."""
    model = instantiate(_cfg("fcos").model).online
    batch = [
        {
            "image": torch.zeros(3, 128, 128, dtype=torch.uint8),
            "instances": _inst([[9, 9, 11, 11]], [0], (128, 128)),
        }
    ]
    with EventStorage() as storage:
        losses, samples = model.forward_pretrain(batch)
        assert (samples.ids == BACKGROUND_ID).all() and len(samples.ids) > 0
        assert all(torch.isfinite(v) for v in losses.values())
        model.forward_pretrain(batch)
        assert storage.latest()["pretrain/images_without_positives"][0] == 2


def test_retinanet_keeps_a_tiny_box_through_its_best_anchor():
    # As the reference (min_pos_iou 0), a box below the smallest anchor still gets its best anchors.
    model = instantiate(_cfg("retinanet").model).online
    batch = [
        {
            "image": torch.zeros(3, 128, 128, dtype=torch.uint8),
            "instances": _inst([[10, 10, 14, 13]], [0], (128, 128)),
        }
    ]
    with EventStorage():
        losses, samples = model.forward_pretrain(batch)
    assert (samples.ids == 0).sum() >= 1 and torch.isfinite(losses["loss_box_reg"])  # ties match


@pytest.mark.parametrize("det", TESTED)
def test_pretraining_steps_lower_the_loss_and_align_the_boxes(det):
    np.random.seed(0)
    torch.manual_seed(0)
    cfg = _cfg(det, ["dataloader.train.mapper.max_proposals=8"])
    pair = instantiate(cfg.model).train()
    assert isinstance(pair, MomentumPair)
    pair.copy_online_to_momentum()
    batch = next(iter(instantiate(cfg.dataloader.train)))
    cfg.optimizer.params.model = pair
    opt = instantiate(cfg.optimizer)
    totals, con, fixed_acc = [], [], []
    with EventStorage() as storage:
        for _ in range(8):
            losses = pair(batch)
            loss = sum(losses.values())
            assert torch.isfinite(loss), losses
            totals.append(loss.item())
            con.append(losses["loss_con"].item())
            fixed_acc.append(storage.latest()["con_fixed/acc"][0])
            opt.zero_grad()
            loss.backward()
            opt.step()
            pair.update_momentum(0.996)
    assert totals[-1] < totals[0] and con[-1] < con[0]
    # Over each proposal's best sample, after 8 steps: 1.0 for both detectors here; with view 2's
    # ids shuffled the losses fall as well (the batch is memorised) but this is 0.0 (RetinaNet)
    # and 0.4 (FCOS).
    assert fixed_acc[-1] >= 0.9, fixed_acc


@pytest.mark.parametrize("det", TESTED)
def test_dense_pretraining_detector_refuses_inference_and_supervised_training(det):
    model = instantiate(_cfg(det).model).online
    image = [{"image": torch.zeros(3, 128, 128, dtype=torch.uint8)}]
    with pytest.raises(NotImplementedError, match="export the checkpoint"):
        model.eval()(image)
    with pytest.raises(RuntimeError, match="trains inside MomentumPair"):
        model.train()(image)


def test_a_zero_area_box_is_dropped_before_it_labels_every_anchor(coco64):
    """A box that pokes under 1 px out of its image (the loader allows it) clips to zero width: with
    Detectron2's low-quality matches its all-zero IoU row would give every anchor its id."""
    from aligndet_d2.data import TwoViewMapper
    from aligndet_d2.data.datasets import load_proposals_json

    d = dict(next(x for x in load_proposals_json(coco64["train"], coco64["images"])))
    w = d["width"]
    d["annotations"] = [
        {"bbox": [w - 0.2, 10, 0.9, 60], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0},
        {"bbox": [10, 10, 80, 60], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0},
    ]
    mapper = TwoViewMapper(short_edge_lengths=(160,), max_size=256, image_format="RGB")
    cfg = _cfg("retinanet")
    pair = instantiate(cfg.model).train()
    with EventStorage() as storage:
        mapped = mapper(d)
        assert mapped["degenerate_boxes"] == 1
        assert [v["instances"].gt_ids.tolist() for v in mapped["views"]] == [[1], [1]]
        pair([mapped])
        assert storage.latest()["pretrain/degenerate_boxes"][0] == 1
        _, samples = pair.online.forward_pretrain([dict(mapped["views"][0])])
    # Only the real box's anchors are positives (a few dozen), not all of the image's.
    assert 0 < int((samples.ids >= 0).sum()) < 100 and set(samples.ids.tolist()) == {
        1,
        BACKGROUND_ID,
    }


def test_inspect_box_of_a_proposal_is_regressed_from_its_nearest_anchor():
    from aligndet_d2.cli.inspect_pretrain import predict_dense_boxes

    model = instantiate(_cfg("retinanet").model).online.eval()
    with torch.no_grad():  # zero deltas: each box is its anchor
        model.head.bbox_pred.weight.zero_()
        model.head.bbox_pred.bias.zero_()
        image = torch.zeros(3, 128, 128, dtype=torch.uint8)
        feats = model.backbone(model.preprocess_image([{"image": image}]).tensor)
        anchors = model.anchor_generator([feats[f] for f in model.head_in_features])
    # The first anchor (smallest size) at cell (5, 5) of stride 8: its own box comes back.
    anchor = anchors[0].tensor[model.head.num_anchors * (5 * 16 + 5)].numpy()
    np.testing.assert_allclose(
        predict_dense_boxes(model, image, anchor[None])[0], anchor, atol=1e-4
    )
    # A box between FCOS points has no point assigned: no box.
    fcos = instantiate(_cfg("fcos").model).online.eval()
    assert np.isnan(predict_dense_boxes(fcos, image, np.array([[9, 9, 11, 11.0]]))).all()
