"""The picture commands write PNGs of the right size."""

import json

import pytest
import torch
from conftest import CONFIGS, write_subset_json
from PIL import Image

from aligndet_d2.cli.inspect_pretrain import main as inspect_main
from aligndet_d2.cli.proposals import main as proposals_main
from aligndet_d2.cli.visualize_views import main as views_main


def _proposals(coco64, tmp_path):
    write_subset_json(coco64["train"], tmp_path / "one.json", 1)
    out = tmp_path / "p.json"
    args = [
        "generate",
        "--image-root",
        coco64["images"],
        "--coco-json",
        str(tmp_path / "one.json"),
        "--output",
        str(out),
        "--no-progress",
    ]
    assert proposals_main(args) == 0
    return out, json.loads(out.read_text())["images"][0]


def test_proposal_and_view_pictures(coco64, tmp_path):
    props, im = _proposals(coco64, tmp_path)
    stem = im["file_name"].rsplit(".", 1)[0]
    # proposals, images and output folder: the same for both commands
    io = ["--proposals", str(props), "--image-root", coco64["images"]]
    io += ["--output-dir", str(tmp_path / "pics")]
    assert proposals_main(["draw", *io, "--max-boxes", "5"]) == 0
    pic = Image.open(tmp_path / "pics" / f"{stem}_proposals.png")
    assert pic.size == (im["width"], im["height"])
    assert views_main([*io, "--short-edge", "200", "--max-size", "400"]) == 0
    from detectron2.data.transforms import ResizeShortestEdge

    vh, vw = ResizeShortestEdge.get_output_shape(im["height"], im["width"], 200, 400)
    # Two views side by side with an 8-pixel gap.
    assert Image.open(tmp_path / "pics" / f"{stem}_views.png").size == (2 * vw + 8, vh)


@pytest.mark.parametrize("det", ["faster_rcnn", "retinanet", "fcos", "cascade_rcnn", "detr"])
def test_inspect_pretrain_picture(det, coco64, tmp_path, capsys):
    from detectron2.config import LazyConfig, instantiate

    props, im = _proposals(coco64, tmp_path)
    cfg = str(CONFIGS / f"pretrain_box_{det}_cpu.py")
    pair = instantiate(LazyConfig.load(cfg).model)
    torch.save({"model": pair.state_dict()}, tmp_path / "pre.pth")
    assert (
        inspect_main(
            [
                "--config-file",
                cfg,
                "--checkpoint",
                str(tmp_path / "pre.pth"),
                "--proposals",
                str(props),
                "--image-root",
                coco64["images"],
                "--output-dir",
                str(tmp_path / "inspect"),
                "--top-k",
                "5",
            ]
        )
        == 0
    )
    assert "boxes match a proposal" in capsys.readouterr().out
    stem = im["file_name"].rsplit(".", 1)[0]
    assert Image.open(tmp_path / "inspect" / f"{stem}_pretrained.png").size[0] > 600
