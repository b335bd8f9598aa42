"""The end-to-end demo on the bundled data (datasets/coco64) with the CPU-sized configs.

Stages: selective-search proposals for the train images (and pictures of them and of the two views)
-> box-domain pre-training of the detector (Faster R-CNN by default, or RetinaNet, FCOS, Cascade
R-CNN, DETR; DETR's proposals are first clustered into pseudo-classes) on the proposals ->
export -> fine-tuning on the train labels from the export -> the same fine-tuning with
neck and heads from scratch -> COCO AP of both on the val images, 80-class and class-agnostic. Each
training stage runs ``train_net.py``; its full log is written next to its outputs and its progress
lines are shown here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import List, Optional

from ..experiment import DETECTORS, get_detector, run_train_net
from . import proposals as proposals_cli
from . import visualize_views

__all__ = ["main"]

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO / "datasets" / "coco64"


def _stage(n: int, total: int, text: str) -> None:
    print(f"\n[demo {n}/{total}] {text}", flush=True)


def _results(output_dir: Path) -> dict:
    with open(output_dir / "eval_results.json") as f:
        return json.load(f)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="demo.py", description=__doc__.splitlines()[0])
    p.add_argument(
        "--data", default=str(DEFAULT_DATA), help="dataset folder (images/, annotations/)"
    )
    p.add_argument(
        "--output-dir", default="output/demo", help="everything goes to <output-dir>/<detector>/"
    )
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="processes")
    p.add_argument(
        "--detector",
        default="faster_rcnn",
        choices=list(DETECTORS),
        help="the detector pre-trained and fine-tuned (CPU configs)",
    )
    p.add_argument("--pretrain-iters", type=int, default=192, help="pre-training iterations")
    p.add_argument("--finetune-iters", type=int, default=384, help="iterations of each fine-tune")
    args = p.parse_args(argv)

    t0 = time.time()
    data = Path(args.data).resolve()
    images = str(data / "images")
    train_json, val_json = str(data / "annotations/train.json"), str(data / "annotations/val.json")
    det = args.detector
    out = Path(args.output_dir).resolve() / det
    props = out / "proposals" / "train.json"
    detector = get_detector(det)
    pretrain_cfg = detector.config("pretrain", "cpu")
    finetune_cfg = detector.config("finetune", "cpu")
    exported = out / f"aligndet_{det}_cpu.pth"
    total = 6

    _stage(1, total, f"selective-search proposals for {train_json} ({args.workers} processes)")
    if proposals_cli.main(
        [
            "generate",
            "--image-root",
            images,
            "--coco-json",
            train_json,
            "--output",
            str(props),
            "--workers",
            str(args.workers),
            "--check",
        ]
    ):
        return 1
    pictures = str(out / "pictures")
    proposals_cli.main(
        [
            "draw",
            "--proposals",
            str(props),
            "--image-root",
            images,
            "--output-dir",
            pictures,
            "--num-images",
            "2",
        ]
    )
    visualize_views.main(
        [
            "--proposals",
            str(props),
            "--image-root",
            images,
            "--output-dir",
            pictures,
            "--num-images",
            "2",
            "--short-edge",
            "288",
            "320",
            "352",
            "--max-size",
            "533",
        ]
    )

    if detector.needs_clusters:
        # DETR's classes are clusters of the proposals (pretrain_box_detr_cpu.py's settings).
        settings = detector.cluster_settings
        from . import cluster_proposals

        clustered = out / "proposals" / "train_k16.json"
        print(f"  clustering the proposals into 16 pseudo-classes -> {clustered}", flush=True)
        if cluster_proposals.main(
            [
                "--json",
                str(props),
                "--image-root",
                images,
                "--config-file",
                pretrain_cfg,
                "--output",
                str(clustered),
                "--num-clusters",
                "16",
                "--max-proposals",
                str(settings["max_proposals"]),
                "--short-edge",
                str(settings["short_edge"]),
                "--max-size",
                str(settings["max_size"]),
            ]
        ):
            return 1
        props = clustered
    _stage(
        2,
        total,
        f"box-domain pre-training of {det} on the proposals ({args.pretrain_iters} iterations)",
    )
    run_train_net(
        [
            "--config-file",
            pretrain_cfg,
            f"dataloader.train.dataset.json_file={props}",
            f"dataloader.train.dataset.image_root={images}",
            f"train.output_dir={out / 'pretrain'}",
            f"train.max_iter={args.pretrain_iters}",
            f"train.checkpointer.period={args.pretrain_iters}",
        ],
        out / "pretrain" / "train_net.log",
        echo=True,
        name="demo",
    )

    _stage(3, total, "export of the online detector for fine-tuning")
    from . import export

    if export.main(
        [
            "--checkpoint",
            str(out / "pretrain" / "model_final.pth"),
            "--output",
            str(exported),
            "--finetune-config",
            finetune_cfg,
        ]
    ):
        return 1

    common = [
        "--config-file",
        finetune_cfg,
        f"dataloader.train.dataset.names.json_file={train_json}",
        f"dataloader.train.dataset.names.image_root={images}",
        f"dataloader.test.dataset.names.json_file={val_json}",
        f"dataloader.test.dataset.names.image_root={images}",
        f"train.max_iter={args.finetune_iters}",
        f"train.checkpointer.period={args.finetune_iters}",
    ]
    arms = {
        "AlignDet pre-trained": out / "finetune_aligndet",
        "from scratch": out / "finetune_scratch",
    }
    _stage(
        4, total, f"fine-tuning from the export ({args.finetune_iters} iterations), then COCO AP"
    )
    run_train_net(
        common
        + [f"train.init_checkpoint={exported}", f"train.output_dir={arms['AlignDet pre-trained']}"],
        arms["AlignDet pre-trained"] / "train_net.log",
        echo=True,
        name="demo",
    )
    _stage(5, total, "the same fine-tuning with neck and heads from scratch, then COCO AP")
    run_train_net(
        common + ["train.init_checkpoint=", f"train.output_dir={arms['from scratch']}"],
        arms["from scratch"] / "train_net.log",
        echo=True,
        name="demo",
    )

    _stage(6, total, f"results on {val_json}")
    rows = [
        "| neck and heads | AP | AP50 | AP (person) | class-agnostic AP | class-agnostic AP50 |",
        "|---|---|---|---|---|---|",
    ]
    for name, d in arms.items():
        r = _results(d)
        b, a = r["bbox"], r["bbox_agnostic"]
        rows.append(
            f"| {name} | {b['AP']:.1f} | {b['AP50']:.1f} | {b.get('AP-person', float('nan')):.1f} "
            f"| {a['AP']:.1f} | {a['AP50']:.1f} |"
        )
    table = "\n".join(rows)
    (out / "results.md").write_text(table + "\n")
    print(table)
    print(
        f"\n[demo] done in {(time.time() - t0) / 60:.1f} min; everything is in {out}/ "
        "(32 training images: the numbers show the pipeline works, not what pre-training is worth;"
        " see benchmarks/ for that)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
