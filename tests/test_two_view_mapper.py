import numpy as np
import pytest
import torch
from detectron2.data import build_detection_train_loader
from detectron2.data import transforms as T
from detectron2.data.detection_utils import read_image
from detectron2.structures import BoxMode

from aligndet_d2.data import TwoViewMapper, register_coco_as_proposals
from aligndet_d2.data.datasets import load_proposals_json
from aligndet_d2.data.two_view_mapper import (
    PHOTOMETRIC_OPS,
    PhotometricOpTransform,
    RandomPhotometric,
    photometric_op,
)


@pytest.fixture(scope="module")
def dicts(coco64):
    return load_proposals_json(coco64["train"], coco64["images"])


def _landscape(dicts):
    return next(d for d in dicts if d["width"] == 640 and d["height"] == 480)


def test_flip_and_resize_by_hand(dicts):
    d = dict(_landscape(dicts))
    d["annotations"] = [
        {"bbox": [100, 50, 200, 150], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0},
        {"bbox": [0, 0, 64, 32], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0},
    ]
    mapper = TwoViewMapper(
        short_edge_lengths=(240,), max_size=1000, flip_prob=1.0, photometric_ops=()
    )
    out = mapper(d)
    assert len(out["views"]) == 2
    for v in out["views"]:
        assert tuple(v["image"].shape) == (3, 240, 320)
        inst = v["instances"]
        # Scale 240 / 480 = 0.5, then flip in a 320-wide image: x -> 320 - x.
        # [100, 50, 300, 200] -> [50, 25, 150, 100] -> [170, 25, 270, 100]
        # [0, 0, 64, 32] -> [0, 0, 32, 16] -> [288, 0, 320, 16]
        torch.testing.assert_close(
            inst.gt_boxes.tensor, torch.tensor([[170.0, 25, 270, 100], [288, 0, 320, 16]])
        )
        assert inst.gt_ids.tolist() == [0, 1] and inst.gt_ids.dtype == torch.int64
        assert inst.image_size == (240, 320)
    # The flipped view is the mirror image of the resized picture (BGR output).
    img = read_image(d["file_name"], format="BGR")
    resized = T.ResizeTransform(480, 640, 240, 320).apply_image(img)
    np.testing.assert_array_equal(
        out["views"][0]["image"].permute(1, 2, 0).numpy(), resized[:, ::-1]
    )


def test_views_keep_ids_aligned_and_every_box(dicts):
    np.random.seed(0)
    mapper = TwoViewMapper(short_edge_lengths=(200, 320, 400), max_size=600, max_proposals=5)
    sizes, flips = set(), set()
    for d in dicts[:8]:
        out = mapper(d)
        n = min(5, len(d["annotations"]))
        orig = torch.tensor(
            [
                BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS)
                for a in d["annotations"][:n]
            ],
            dtype=torch.float32,
        )
        for v in out["views"]:
            inst = v["instances"]
            assert inst.gt_ids.tolist() == list(range(n))
            h, w = inst.image_size
            s = h / d["height"]
            sizes.add(h)
            # Undo the resize; then the box matches the original either as is or mirrored.
            b = inst.gt_boxes.tensor / s
            mirrored = torch.stack(
                [d["width"] - b[:, 2], b[:, 1], d["width"] - b[:, 0], b[:, 3]], 1
            )
            direct = torch.allclose(b, orig, atol=1.5)
            flipped = torch.allclose(mirrored, orig, atol=1.5)
            assert direct or flipped
            flips.add(flipped)
    assert len(sizes) > 1 and flips == {True, False}


def _ann(x, y, w, h):
    return {"bbox": [x, y, w, h], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0}


def test_the_two_views_are_drawn_independently(dicts):
    np.random.seed(0)
    mapper = TwoViewMapper(short_edge_lengths=(200, 240, 280), max_size=600)
    inner, record = mapper.augmentations, []
    mapper.augmentations = lambda aug_input: record.append(inner(aug_input)) or record[-1]

    def drawn(tfs):
        size = next(t.new_h for t in tfs if isinstance(t, T.ResizeTransform))
        flip = any(isinstance(t, T.HFlipTransform) for t in tfs)
        ops = [(t.name, t.magnitude) for t in tfs if isinstance(t, PhotometricOpTransform)]
        return size, flip, ops[0] if ops else ("identity", 0)

    d, n = _landscape(dicts), 60
    for _ in range(n):
        mapper(d)
    pairs = [(drawn(record[2 * i]), drawn(record[2 * i + 1])) for i in range(n)]
    differ = [sum(a[j] != b[j] for a, b in pairs) / n for j in range(3)]
    # Independent draws: sizes differ with probability 2/3, flips 1/2, ops (9 x 9 + 1 outcomes)
    # nearly always; views drawn once and shared would never differ.
    assert 0.4 < differ[0] < 0.9 and 0.3 < differ[1] < 0.7 and differ[2] > 0.8, differ
    assert len({p[0][0] for p in pairs}) == 3 and len({p[0][2][0] for p in pairs}) == 9


def test_boxes_under_one_pixel_in_a_view_are_dropped_from_both(dicts, caplog):
    d = dict(_landscape(dicts))  # 640 x 480
    d["annotations"] = [
        _ann(100, 50, 200, 150),
        _ann(639.8, 100, 0.9, 50),  # pokes 0.7 px out (the loader allows 1): 0.2 px after clipping
        _ann(300, 300, 1.5, 20),  # 1.5 px wide at full size, 0.75 at half size
        _ann(10, 10, 64, 32),
    ]
    np.random.seed(0)
    mapper = TwoViewMapper(short_edge_lengths=(240, 480), max_size=1000)
    kept_thin = 0
    with caplog.at_level("WARNING"):
        for _ in range(12):
            out = mapper(d)
            a, b = (v["instances"] for v in out["views"])
            full_size = a.image_size[0] == b.image_size[0] == 480
            expected = [0, 2, 3] if full_size else [0, 3]
            kept_thin += full_size
            assert a.gt_ids.tolist() == b.gt_ids.tolist() == expected
            assert out["degenerate_boxes"] == 4 - len(expected)
            for inst in (a, b):
                wh = inst.gt_boxes.tensor[:, 2:] - inst.gt_boxes.tensor[:, :2]
                assert (wh >= 1).all() and len(inst.gt_classes) == len(expected)
    assert 0 < kept_thin < 12  # both cases were drawn
    assert caplog.text.count("under 1 px wide or high") == 1  # once per process


@pytest.mark.parametrize("op", PHOTOMETRIC_OPS)
def test_photometric_ops_leave_boxes_unchanged(op):
    rng = np.random.RandomState(0)
    img = rng.randint(40, 200, size=(48, 64, 3)).astype(np.uint8)  # not full range
    boxes = np.array([[1.0, 2.0, 30.0, 40.0], [10.0, 5.0, 63.0, 47.0]], dtype=np.float32)
    aug_input = T.AugInput(img, boxes=boxes.copy())
    RandomPhotometric(ops=[op], magnitude_range=(2, 2))(aug_input)
    np.testing.assert_array_equal(aug_input.boxes, boxes)
    assert aug_input.image.shape == img.shape and aug_input.image.dtype == np.uint8
    if op != "identity":
        assert not np.array_equal(aug_input.image, img)


def test_photometric_magnitudes():
    from PIL import Image

    ramp = Image.fromarray(np.tile(np.arange(256, dtype=np.uint8), (4, 1))[..., None].repeat(3, 2))
    # Solarize at m = 5: threshold int(25.6 * 5) = 128; pixels >= 128 are inverted.
    out = np.asarray(photometric_op("solarize", 5)(ramp))[0, :, 0]
    assert out[127] == 127 and out[128] == 255 - 128
    # Posterize at m = 9 keeps 4 - int(3.6) = 1 bit: two levels.
    assert set(np.unique(np.asarray(photometric_op("posterize", 9)(ramp)))) == {0, 128}
    # Brightness at m = 5: factor 0.1 + 0.18 * 5 = 1.0, the identity.
    np.testing.assert_array_equal(
        np.asarray(photometric_op("brightness", 5)(ramp)), np.asarray(ramp)
    )
    with pytest.raises(ValueError, match="unknown photometric op 'blur' \\(allowed: "):
        photometric_op("blur", 3)


def test_top_k_keeps_first_proposals_in_file_order(dicts):
    d = _landscape(dicts)
    out = TwoViewMapper(
        short_edge_lengths=(480,), max_size=640, flip_prob=0.0, photometric_ops=(), max_proposals=3
    )(d)
    expected = [
        BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in d["annotations"][:3]
    ]
    torch.testing.assert_close(
        out["views"][1]["instances"].gt_boxes.tensor, torch.tensor(expected, dtype=torch.float32)
    )


def test_standard_loader_with_aspect_ratio_grouping(coco64):
    register_coco_as_proposals("test_mapper_loader", coco64["train"], coco64["images"])
    from detectron2.data import DatasetCatalog

    loader = build_detection_train_loader(
        dataset=DatasetCatalog.get("test_mapper_loader"),
        mapper=TwoViewMapper(short_edge_lengths=(160,), max_size=320, max_proposals=4),
        total_batch_size=2,
        aspect_ratio_grouping=True,
        num_workers=0,
    )
    it = iter(loader)
    for _ in range(3):
        batch = next(it)
        assert len(batch) == 2
        # Grouped by orientation: both images of a batch are landscape or both portrait.
        assert len({d["width"] > d["height"] for d in batch}) == 1
        for d in batch:
            a, b = d["views"]
            assert a["instances"].gt_ids.tolist() == b["instances"].gt_ids.tolist()
            assert a["image"].dtype == torch.uint8 and min(a["image"].shape[1:]) == 160


def test_bad_arguments():
    with pytest.raises(ValueError, match="max_proposals=0"):
        TwoViewMapper(max_proposals=0)
    # "max_proposals=None" on the command line gives the string 'None': say how to write it.
    with pytest.raises(ValueError, match=r"max_proposals='None'.*max_proposals=null"):
        TwoViewMapper(max_proposals="None")
    with pytest.raises(ValueError, match="allowed: 'BGR', 'RGB'"):
        TwoViewMapper(image_format="YUV")
