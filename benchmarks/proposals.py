#!/usr/bin/env python
"""Proposal throughput: OpenCV selective search (three modes) vs the pure-Python `selectivesearch`.

Measures, on the same images in one run, images per second per process (one OpenCV thread), the mean
number of kept boxes per image, and the speed-up of `tools/proposals.py generate` from 1 to 2
processes. Writes benchmarks/results/proposals.{md,json}. Run it alone on the machine:

    pip install -r requirements/benchmark.txt    # selectivesearch + scikit-image, benchmark only
    python benchmarks/proposals.py --data ../shared/data/coco256
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from aligndet_d2.data.proposals import (
    ProposalFilter,
    generate_proposals,
    list_images,
    selective_search,
)
from aligndet_d2.experiment import REPORT_ONLY_HELP, RESULTS, rewrite_report
from aligndet_d2.utils.machine import machine_summary


def _images(data: str, n: int):
    tasks, _ = list_images(
        os.path.join(data, "images"), os.path.join(data, "annotations/train.json")
    )
    return [os.path.join(data, "images", t.file_name) for t in tasks[:n]]


def _time_engine(paths, run, flt: ProposalFilter):
    """Seconds per image (decode + search + filter) and mean kept boxes, in this one process."""
    from detectron2.data.detection_utils import read_image

    kept, t0 = [], time.perf_counter()
    for p in paths:
        img = read_image(p, format="BGR")
        boxes = run(img)
        kept.append(len(flt.apply(boxes, img.shape[1], img.shape[0])[0]))
    dt = time.perf_counter() - t0
    return {
        "images": len(paths),
        "seconds": dt,
        "images_per_s": len(paths) / dt,
        "kept_per_image": float(np.mean(kept)),
    }


def _selectivesearch_package(img_bgr):
    import selectivesearch

    # SoCo's settings for the package: scale 300, sigma 0.9, min_size 100 (the package wants RGB).
    _, regions = selectivesearch.selective_search(
        img_bgr[:, :, ::-1], scale=300, sigma=0.9, min_size=100
    )
    return np.asarray([r["rect"] for r in regions], dtype=np.int64).reshape(-1, 4)


def _generate_seconds(data, n, workers, tmp):
    js = Path(tmp) / "subset.json"
    d = json.load(open(os.path.join(data, "annotations/train.json")))
    d["images"] = d["images"][:n]
    js.write_text(json.dumps(d))
    out = Path(tmp) / f"w{workers}.json"
    t0 = time.perf_counter()
    generate_proposals(
        os.path.join(data, "images"),
        str(out),
        coco_json=str(js),
        num_workers=workers,
        overwrite=True,
        progress=False,
    )
    return time.perf_counter() - t0, out.read_bytes()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data/coco256", help="COCO-style folder")
    p.add_argument("--soco-images", type=int, default=128)
    p.add_argument("--slow-images", type=int, default=32, help="images for fast / quality")
    p.add_argument("--out", default=str(RESULTS / "proposals"), help="report path without suffix")
    p.add_argument("--report-only", action="store_true", help=REPORT_ONLY_HELP)
    args = p.parse_args(argv)
    if args.report_only:
        return rewrite_report(Path(args.out), markdown)
    warnings.simplefilter("ignore")
    try:
        import selectivesearch  # noqa: F401
    except ImportError:
        sys.exit("needs the benchmark-only packages: pip install -r requirements/benchmark.txt")

    import cv2
    import torch

    cv2.setNumThreads(1)  # one OpenCV thread, as in each worker of the tool
    torch.set_num_threads(1)
    flt = ProposalFilter()
    rows = {}
    soco = _images(args.data, args.soco_images)
    slow = soco[: args.slow_images]
    plan = [
        ("opencv soco", soco, lambda im: selective_search(im, "soco")),
        ("selectivesearch (package)", soco, _selectivesearch_package),
        ("opencv fast", slow, lambda im: selective_search(im, "fast")),
        ("opencv quality", slow, lambda im: selective_search(im, "quality")),
    ]
    for name, paths, run in plan:
        print(f"{name}: {len(paths)} images ...", flush=True)
        rows[name] = _time_engine(paths, run, flt)
        print(
            f"  {rows[name]['images_per_s']:.2f} images/s, "
            f"{rows[name]['kept_per_image']:.1f} kept boxes per image",
            flush=True,
        )
    # The same engines on the first `slow` images, so fast/quality compare on equal footing too.
    n_slow = len(slow)
    rows["opencv soco (first %d)" % n_slow] = _time_engine(slow, plan[0][2], flt)

    print("generate: 1 vs 2 processes (soco) ...", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        t1, b1 = _generate_seconds(args.data, args.soco_images, 1, tmp)
        t2, b2 = _generate_seconds(args.data, args.soco_images, 2, tmp)
    scaling = {
        "images": args.soco_images,
        "seconds_1": t1,
        "seconds_2": t2,
        "speedup": t1 / t2,
        "identical_output": b1 == b2,
    }
    ratio = rows["opencv soco"]["images_per_s"] / rows["selectivesearch (package)"]["images_per_s"]
    result = {
        "machine": machine_summary(),
        "command": "python benchmarks/proposals.py --data " + args.data,
        "date": time.strftime("%Y-%m-%d"),
        "engines": rows,
        "soco_vs_package": ratio,
        "scaling": scaling,
        "targets": {"soco_vs_package": 4.0, "speedup_1_to_2": 1.7},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps(result, indent=2))
    Path(args.out + ".md").write_text(markdown(result))
    print(markdown(result))


def markdown(r):
    lines = [
        "# Proposal throughput",
        "",
        f"Machine: {r['machine']}. Date: {r['date']}.",
        "",
        f"Command: `{r['command']}`",
        "",
        "Per process, one OpenCV (and torch) thread; each image is decoded, searched and filtered "
        "with the SoCo filter (min side 32, aspect 1/3..3, scale <= 0.8). The package runs at "
        "SoCo's settings (scale 300, sigma 0.9, min_size 100); `soco` is OpenCV's single "
        "strategy at k 300, sigma 0.9.",
        "",
        "| engine | images | images/s per process | s/image | kept boxes per image |",
        "|---|---|---|---|---|",
    ]
    for name, e in r["engines"].items():
        lines.append(
            f"| {name} | {e['images']} | {e['images_per_s']:.2f} | "
            f"{e['seconds'] / e['images']:.3f} | {e['kept_per_image']:.1f} |"
        )
    s = r["scaling"]
    lines += [
        "",
        f"- `soco` vs the `selectivesearch` package, per process: **{r['soco_vs_package']:.2f}x** "
        f"(target >= {r['targets']['soco_vs_package']}x).",
        f"- `tools/proposals.py generate`, `soco`, {s['images']} images: 1 process "
        f"{s['seconds_1']:.1f} s, "
        f"2 processes {s['seconds_2']:.1f} s: **{s['speedup']:.2f}x** (target >= "
        f"{r['targets']['speedup_1_to_2']}x); outputs byte-identical: {s['identical_output']}.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
