"""Bad input is one clear error before anything trains: the dataset checks of train_net.py and the
recipe (every image, box and class), the override checks, the output folder, the adapters of a
checkpoint."""

import json
from argparse import Namespace

import pytest
from conftest import COCO64, REPO, tiny_dataset
from detectron2.config import LazyConfig

from aligndet_d2.data.checks import (
    DatasetError,
    check_coco_dataset,
    check_same_classes,
    list_image_files,
)
from aligndet_d2.engine.overrides import OverrideError, apply_checked_overrides

FROZEN = str(REPO / "configs" / "finetune_faster_rcnn_frozen_cpu.py")


def _broken(tmp_path):
    """coco64's first 4 train images with one problem of each kind."""
    root = tiny_dataset(tmp_path / "d", train=4)
    path = root / "annotations" / "train.json"
    d = json.loads(path.read_text())
    ims = d["images"]
    (root / "images" / ims[0]["file_name"]).unlink()  # missing
    corrupt = root / "images" / ims[1]["file_name"]
    corrupt.write_bytes(corrupt.read_bytes()[:4000])  # truncated JPEG
    by_image = {}
    for a in d["annotations"]:
        by_image.setdefault(a["image_id"], a)
    a2, a3 = by_image[ims[2]["id"]], by_image[ims[3]["id"]]
    a2["bbox"] = [ims[2]["width"] - 5, 10, 50, 20]  # outside the image
    a3["bbox"] = [10, 10, -4, 20]  # negative width
    d["annotations"].append({**a3, "id": 10**6, "category_id": 999, "bbox": [1, 1, 5, 5]})
    path.write_text(json.dumps(d))
    return root, path, ims


def test_every_problem_of_a_dataset_is_listed_with_its_file(tmp_path):
    root, path, ims = _broken(tmp_path)
    with pytest.raises(DatasetError) as e:
        check_coco_dataset(str(path), str(root / "images"))
    msg = str(e.value)
    lines = msg.splitlines()
    assert lines[0].startswith(f"dataset {path}: 5 problem(s)")
    assert "nothing was trained" in lines[0]
    images = root / "images"
    assert f"{images / ims[0]['file_name']}: image file does not exist" in msg
    assert f"{images / ims[1]['file_name']}: corrupt image (" in msg
    w = ims[2]["width"]
    assert f"box [{w - 5}, 10, 50, 20] outside the {w}x{ims[2]['height']} image" in msg
    assert "degenerate box [10, 10, -4, 20] (width and height must be > 0)" in msg
    assert "unknown class: annotation 1000000 has category_id 999" in msg
    assert len(lines) == 6  # the header and one line per problem


def test_a_good_dataset_passes_and_the_class_count_must_match(tmp_path):
    train = str(COCO64 / "annotations" / "train.json")
    data = check_coco_dataset(train, str(COCO64 / "images"), num_classes=80)
    assert len(data["images"]) == 32
    with pytest.raises(
        DatasetError,
        match="the model has 3 classes but the json declares 80 "
        "categories: set model.roi_heads.num_classes=80",
    ):
        check_coco_dataset(
            train,
            str(COCO64 / "images"),
            num_classes=3,
            num_classes_key="model.roi_heads.num_classes",
        )


def test_classes_under_other_ids_are_refused():
    check_same_classes(("train", ["cat", "dog"]), ("val", ["cat", "dog"]))
    with pytest.raises(DatasetError, match=r"class 0: 'cat' vs 'dog'; class 1: 'dog' vs 'cat'"):
        check_same_classes(("train", ["cat", "dog"]), ("val", ["dog", "cat"]))


def test_an_empty_folder_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(DatasetError, match="empty: no image files"):
        list_image_files(str(tmp_path / "empty"))


def _cfg():
    return LazyConfig.load(FROZEN)


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "model.roi_heads.num_clases=3",
            "override model.roi_heads.num_clases=3: model.roi_heads has no key 'num_clases' "
            "(did you mean num_classes?)",
        ),
        ("train.max_iters=2", "train has no key 'max_iters' (did you mean max_iter?)"),
        (
            "train.max_iter=abc",
            "override train.max_iter='abc': expected a number (the config has 384)",
        ),
        ("train.amp.enabled=yes", "expected True or False"),
        ("dataloader.tset.num_workers=2", "the config has no dataloader.tset (did you mean test?)"),
    ],
)
def test_a_wrong_override_names_the_key_and_the_nearest(override, message):
    with pytest.raises(OverrideError) as e:
        apply_checked_overrides(_cfg(), [override])
    assert message in str(e.value)


def test_valid_overrides_apply():
    cfg = apply_checked_overrides(
        _cfg(),
        [
            "model.roi_heads.num_classes=3",  # an argument of ROIHeads, StandardROIHeads' base
            "model.backbone.bottom_up.adapters=parallel",
            "train.seed=4",  # read by Detectron2's default_setup, absent from the config
            "train.init_checkpoint=",
            "optimizer.lr=0.01",
            "train.max_iter=7",
        ],
    )
    assert cfg.model.roi_heads.num_classes == 3 and cfg.train.seed == 4 and cfg.train.max_iter == 7
    assert cfg.model.backbone.bottom_up.adapters == "parallel" and cfg.optimizer.lr == 0.01


def _main(tmp_path, *opts, eval_only=False):
    from aligndet_d2.engine.train_loop import main

    args = Namespace(
        config_file=FROZEN,
        opts=[f"train.output_dir={tmp_path / 'out'}", "train.max_iter=1", *opts],
        eval_only=eval_only,
        resume=False,
        num_gpus=1,
    )
    return main(args)


def test_train_net_refuses_an_output_folder_under_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match=f"{tmp_path / 'file'} is a file"):
        _main(tmp_path, f"train.output_dir={tmp_path / 'file' / 'run'}")


def test_train_net_checks_the_datasets_before_building_the_model(tmp_path):
    root, path, ims = _broken(tmp_path)
    data = [
        f"dataloader.train.dataset.names.json_file={path}",
        f"dataloader.train.dataset.names.image_root={root / 'images'}",
        "dataloader.train.dataset.names.name=broken_train",
    ]
    with pytest.raises(DatasetError, match="5 problem"):
        _main(tmp_path, *data)
    assert not (tmp_path / "out" / "model_final.pth").exists()
    # num_classes left at 3 on coco64's 80 categories.
    with pytest.raises(DatasetError, match="set model.roi_heads.num_classes=80"):
        _main(tmp_path, "model.roi_heads.num_classes=3")


def test_a_val_json_with_the_classes_under_other_ids_is_refused(tmp_path):
    d = json.loads((COCO64 / "annotations" / "val.json").read_text())
    first, second = d["categories"][0], d["categories"][1]
    first["name"], second["name"] = second["name"], first["name"]
    val = tmp_path / "val.json"
    val.write_text(json.dumps(d))
    with pytest.raises(DatasetError, match="not the 80 of the training dataset coco64_train"):
        _main(
            tmp_path,
            f"dataloader.test.dataset.names.json_file={val}",
            "dataloader.test.dataset.names.name=swapped_val",
        )


def test_weights_with_adapters_need_the_adapters_switch(tmp_path):
    import torch
    from detectron2.config import instantiate

    from aligndet_d2.engine.train_loop import check_init_checkpoint

    cfg = apply_checked_overrides(_cfg(), ["model.backbone.bottom_up.adapters=parallel"])
    path = tmp_path / "model_final.pth"
    torch.save({"model": instantiate(cfg.model).state_dict()}, path)
    plain = instantiate(_cfg().model)
    with pytest.raises(
        ValueError, match="residual adapters .* set model.backbone.bottom_up.adapters=parallel"
    ):
        check_init_checkpoint(plain, str(path))
    check_init_checkpoint(instantiate(cfg.model), str(path))  # with the switch: fine


def test_a_wrong_size_a_repeated_id_a_bad_box_and_an_unreadable_json_are_named(tmp_path):
    root = tiny_dataset(tmp_path / "d", train=2)
    path = root / "annotations" / "train.json"
    d = json.loads(path.read_text())
    ims = d["images"]
    w, h = ims[0]["width"], ims[0]["height"]
    ims[0]["width"] = w + 7
    d["images"].append(dict(ims[1]))  # the same id twice
    d["annotations"][0]["bbox"] = [1, 2, 3]
    path.write_text(json.dumps(d))
    with pytest.raises(DatasetError) as e:
        check_coco_dataset(str(path), str(root / "images"))
    msg = str(e.value)
    assert f"the image is {w}x{h} but the json says {w + 7}x{h}" in msg
    assert f"image id {ims[1]['id']} appears twice" in msg
    assert "box [1, 2, 3] is not 4 numbers [x, y, width, height]" in msg
    path.write_text("{not json")
    with pytest.raises(DatasetError, match=f"{path}: cannot read the json"):
        check_coco_dataset(str(path), str(root / "images"))
