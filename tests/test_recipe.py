"""tools/recipe.py end to end on a tiny set, its resume, its choices, and its refusals of bad input
before anything trains; tools/predict.py on a saved model."""

import json
import shutil

import pytest
from conftest import COCO64, REPO, tiny_dataset

from aligndet_d2.data.checks import DatasetError
from aligndet_d2.experiment.recipe import (
    RecipeSettings,
    choose,
    finetune_schedule,
    pretrain_schedule,
    run_recipe,
)


def test_schedules_follow_the_pool_and_the_labels():
    # The README's frozen + adapters row: 2501 VOC train images -> 1250 pre-training iterations;
    # a 10 % split (250 images) -> the CPU VOC configs' 1500 fine-tune iterations.
    assert pretrain_schedule(2501) == 1250
    assert pretrain_schedule(30) == 200
    assert finetune_schedule(250) == 1500


def test_the_lr_choice_takes_the_best_held_out_ap50():
    nan = float("nan")
    assert choose({0.01: {0.333: 5.0, 1.0: 7.0}, 0.02: {0.333: 9.0, 1.0: nan}}) == (
        0.02,
        0.333,
        9.0,
    )
    # Ties: the lr tried first (the config's), then the longer schedule.
    assert choose({0.01: {0.333: 5.0, 1.0: 5.0}, 0.02: {1.0: 5.0}}) == (0.01, 1.0, 5.0)
    # Nothing scored (no detections): the config's lr, the whole schedule.
    lr, frac, ap = choose({0.01: {1.0: nan}, 0.02: {}})
    assert (lr, frac) == (0.01, 1.0) and ap != ap


def _settings(root, out, **kw):
    return RecipeSettings(
        images=str(root / "images"),
        output=str(out),
        train_json=str(root / "annotations" / "train.json"),
        val_json=str(root / "annotations" / "val.json"),
        pretrain_iters=2,
        finetune_iters=2,
        workers=1,
        pictures=1,
        **kw,
    )


@pytest.mark.timeout(900)
def test_the_recipe_runs_end_to_end_and_continues_where_it_stopped(tmp_path, capsys):
    root = tiny_dataset(tmp_path / "d", train=4, val=2)
    out = tmp_path / "out"
    # Every box passes the test threshold, so that 2 iterations give held-out AP50s to compare.
    opts = ("model.roi_heads.box_predictor.test_score_thresh=0.0",)
    report = run_recipe(_settings(root, out, lr_factors=(1.0, 2.0), finetune_opts=opts))
    text = report.read_text()
    state = json.loads((out / "recipe.json").read_text())
    # The pool leaves the val images out; the lr choice ran both candidates on held-out images.
    assert state["data"]["pool"] == 4 and state["data"]["val"] == 2
    props = json.loads((out / "proposals" / "pool.json").read_text())
    val_files = {
        im["file_name"] for im in json.loads((root / "annotations/val.json").read_text())["images"]
    }
    assert not val_files & {im["file_name"] for im in props["images"]}
    choice = state["lr_choice"]["aligndet"]
    assert set(choice["candidates"]) == {f"{choice['config_lr']:g}", f"{2 * choice['config_lr']:g}"}
    held = json.loads((out / "data" / "tune_holdout.json").read_text())["images"]
    rest = json.loads((out / "data" / "tune_train.json").read_text())["images"]
    assert len(held) == 1 and len(rest) == 3 and not val_files & {im["file_name"] for im in held}
    results = json.loads((out / "finetune_aligndet" / "eval_results.json").read_text())
    assert "AP50" in results["bbox"] and "bbox_agnostic" in results
    assert "| AlignDet pre-trained |" in text and "## How well the proposals cover" in text
    pictures = list((out / "predict_val" / "pictures").glob("*.jpg"))
    assert len(pictures) == 1 and f"({pictures[0].relative_to(out)})" in text
    # A second call trains nothing: every stage's output is kept, the lr choice is recorded.
    stamps = {p: p.stat().st_mtime for p in out.rglob("model_final.pth")}
    assert len(stamps) == 4  # pre-training, two candidates, the final fine-tune
    capsys.readouterr()
    run_recipe(_settings(root, out, lr_factors=(1.0, 2.0), finetune_opts=opts))
    assert {p: p.stat().st_mtime for p in out.rglob("model_final.pth")} == stamps
    assert capsys.readouterr().out.count("done before, kept") == 2
    # Stopped after the candidates, before the choice was recorded and the final fine-tune began:
    # the candidates are kept and only the final fine-tune runs.
    state = json.loads((out / "recipe.json").read_text())
    del state["lr_choice"]
    (out / "recipe.json").write_text(json.dumps(state))
    final = out / "finetune_aligndet" / "model_final.pth"
    shutil.rmtree(final.parent)
    run_recipe(_settings(root, out, lr_factors=(1.0, 2.0), finetune_opts=opts))
    assert capsys.readouterr().out.count("done before, kept") == 3
    after = {p: p.stat().st_mtime for p in out.rglob("model_final.pth")}
    assert {p: t for p, t in after.items() if p != final} == {
        p: t for p, t in stamps.items() if p != final
    }
    assert final.exists()


def _expect_refusal(tmp_path, root, *needles, **kw):
    out = tmp_path / "out"
    with pytest.raises(DatasetError) as e:
        run_recipe(_settings(root, out, lr_factors=(1.0,), **kw))
    for n in needles:
        assert n in str(e.value)
    assert not (out / "proposals").exists() and not (out / "pretrain").exists()
    return str(e.value)


def test_bad_input_is_refused_before_anything_runs(tmp_path):
    root = tiny_dataset(tmp_path / "d", train=3, val=2)
    path = root / "annotations" / "train.json"
    d = json.loads(path.read_text())
    ims = d["images"]
    (root / "images" / ims[0]["file_name"]).unlink()  # missing image
    corrupt = root / "images" / ims[1]["file_name"]
    corrupt.write_bytes(corrupt.read_bytes()[:3000])
    a = next(a for a in d["annotations"] if a["image_id"] == ims[2]["id"])
    a["bbox"] = [ims[2]["width"] + 10, 0, 20, 20]  # outside the image
    d["annotations"].append({**a, "id": 777777, "category_id": 12345, "bbox": [1, 1, 5, 5]})
    path.write_text(json.dumps(d))
    msg = _expect_refusal(
        tmp_path,
        root,
        f"{root / 'images' / ims[0]['file_name']}: image file does not exist",
        f"{corrupt}: corrupt image",
        "outside the",
        "unknown class",
    )
    # One line each; the corrupt image, found in the folder and in the json, is listed once.
    assert msg.splitlines()[0].startswith(f"recipe inputs ({root / 'images'}): 4 problem(s)")


def test_an_empty_image_folder_is_refused(tmp_path):
    root = tiny_dataset(tmp_path / "d", train=2, val=1)
    for f in (root / "images").iterdir():
        f.unlink()
    _expect_refusal(tmp_path, root, "no image files")


def test_predict_writes_coco_results_and_pictures(tmp_path, capsys):
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import LazyConfig, instantiate

    from aligndet_d2.cli import predict

    config = str(REPO / "configs" / "finetune_faster_rcnn_frozen_cpu.py")
    # An untrained model whose every box passes: the test is of the plumbing, not of the AP.
    opts = ["model.roi_heads.box_predictor.test_score_thresh=0.0"]
    cfg = LazyConfig.apply_overrides(LazyConfig.load(config), opts)
    DetectionCheckpointer(instantiate(cfg.model), str(tmp_path)).save("model_final")
    images = tmp_path / "in"
    images.mkdir()
    val = json.loads((COCO64 / "annotations" / "val.json").read_text())
    for im in val["images"][:2]:
        (images / im["file_name"]).write_bytes((COCO64 / "images" / im["file_name"]).read_bytes())
    argv = ["--config-file", config, "--checkpoint", str(tmp_path / "model_final.pth")]
    argv += ["--input", str(images), "--output", str(tmp_path / "pred"), "--score", "0.0", *opts]
    assert predict.main(argv) == 0
    rows = json.loads((tmp_path / "pred" / "predictions.json").read_text())
    coco_ids = {c["id"] for c in val["categories"]}
    assert rows and {r["category_id"] for r in rows} <= coco_ids  # COCO ids, not 0..79
    assert {r["file_name"] for r in rows} <= {im["file_name"] for im in val["images"][:2]}
    assert all(len(r["bbox"]) == 4 and r["bbox"][2] >= 0 for r in rows)
    assert len(list((tmp_path / "pred" / "pictures").glob("*.jpg"))) == 2
    assert "[predict] 2 images in" in capsys.readouterr().out
    assert predict.main([*argv[:2], "--checkpoint", str(tmp_path / "nope.pth"), *argv[4:]]) == 1
    assert "nope.pth: no such file" in capsys.readouterr().err
