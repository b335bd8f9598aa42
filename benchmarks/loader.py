#!/usr/bin/env python
"""Images per second of the two-view pre-training mapper in one loader worker, paper and CPU sizes.

Each loader worker is one process running the mapper (read, two augmented views, the proposals of
both); a GPU consumes ``batch / step time`` images per second. The report sets the one against
the other for the paper-setting step times of benchmarks/results/gpu_check.md, and says how many
workers one GPU needs. Selective-search proposals of the coco256 train images are made first
(once, under ``--work-dir``). Run it alone on the machine:

    python benchmarks/loader.py --data ../shared/data/coco256
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

from aligndet_d2.experiment import (
    REPORT_ONLY_HELP,
    RESULTS,
    proposals_once,
    rewrite_report,
    write_report,
)

CONFIGS = {
    "paper": "configs/pretrain_box_faster_rcnn.py",
    "cpu": "configs/pretrain_box_faster_rcnn_cpu.py",
}
# Pre-training s/iter at 2 images per step on one H200 (benchmarks/results/gpu_check.md, float16)
# today, and at the project's target of 1.6x the supervised step (0.041 s for Faster R-CNN).
GPU_STEPS = {"today (Faster R-CNN, H200)": 0.103, "target (1.6 x 0.041 s)": 1.6 * 0.041}
BATCH = 2


def images_per_second(config: str, dicts, warmup: int = 3) -> float:
    """The mapper of ``config``'s pre-training loader on ``dicts``, in this process."""
    from detectron2.config import LazyConfig, instantiate

    mapper = instantiate(LazyConfig.load(config).dataloader.train.mapper)
    for d in dicts[:warmup]:
        mapper(dict(d))
    t = time.perf_counter()
    for d in dicts[warmup:]:
        mapper(dict(d))
    return (len(dicts) - warmup) / (time.perf_counter() - t)


def markdown(r: dict) -> str:
    lines = [
        "# Two-view mapper throughput per loader worker",
        "",
        f"Machine: {r['machine']}. Date: {r['date']}. Command: `{r['command']}`.",
        "",
        f"One process (one OpenCV and torch thread, as a loader worker), {r['images']} coco256 "
        "train images with their selective-search proposals, after 3 untimed ones.",
        "",
        "| setting | config | images/s per worker |",
        "|---|---|---|",
    ]
    lines += [f"| {k} | `{CONFIGS[k]}` | {v:.1f} |" for k, v in r["images_per_s"].items()]
    lines += ["", "| GPU step | s/iter | images/s consumed | workers needed (paper sizes) |"]
    lines.append("|---|---|---|---|")
    paper = r["images_per_s"]["paper"]
    for name, s in r["gpu_steps"].items():
        need = BATCH / s
        lines.append(f"| {name} | {s:.3f} | {need:.1f} | {math.ceil(need / paper)} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data/coco256", help="images/ and annotations/")
    p.add_argument("--images", type=int, default=43, help="images mapped (3 of them untimed)")
    p.add_argument("--work-dir", default="output/bench_loader")
    p.add_argument("--out", default=str(RESULTS / "loader"), help="report path without suffix")
    p.add_argument("--report-only", action="store_true", help=REPORT_ONLY_HELP)
    args = p.parse_args(argv)
    if args.report_only:
        rewrite_report(Path(args.out), markdown)
        return 0
    import cv2
    import torch

    from aligndet_d2.data.datasets import load_proposals_json
    from aligndet_d2.utils.machine import machine_summary

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    data = Path(args.data)
    props = Path(args.work_dir) / "train_proposals.json"
    proposals_once(str(data / "images"), props, coco_json=str(data / "annotations/train.json"))
    dicts = load_proposals_json(str(props), str(data / "images"))[: args.images]
    rates = {k: images_per_second(c, dicts) for k, c in CONFIGS.items()}
    report = {
        "machine": machine_summary(),
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join(["python benchmarks/loader.py", *(argv or sys.argv[1:])]),
        "images": len(dicts) - 3,
        "images_per_s": rates,
        "gpu_steps": GPU_STEPS,
    }
    write_report(report, Path(args.out), markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
