#!/usr/bin/env python
"""The base momentum of the CPU pre-training configs, chosen on held-out train images.

The momentum schedule (base -> 1, cosine) of the paper is set for its 88716 iterations; at the CPU
configs' 192, base 0.996 leaves 68 % of the momentum detector's neck and heads at their random
initialisation by the end of the run (``initial_weight_share``). For each CPU pre-training config
and each base momentum this pre-trains the config as it is (its bundled data, its length, one seed)
and then measures a probe on train images that pre-training never saw. The probe is the
fixed-set contrastive loss and accuracy over two seeded views of each image: one sample per
proposal (R-CNN's pseudo-GT box, RetinaNet's best anchor, FCOS's most central point; see
``ContrastiveSamples``). It is taken with the online detector's queries against the momentum
detector's keys (what training optimises) and against its own keys (what the exported online
detector learned, comparable across base momenta). COCO val images are never used.

    python benchmarks/momentum.py --data ../shared/data/coco256 --notes benchmarks/notes/momentum.md

Resumable: finished pre-trainings and probes are kept under --work-dir and skipped. Writes
<out>.md and <out>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Dict, List

from aligndet_d2.experiment import (
    REPO,
    REPORT_ONLY_HELP,
    RESULTS,
    Run,
    get_detector,
    proposals_once,
    rewrite_report,
    write_report,
)

SUPPORTED = ("faster_rcnn", "retinanet", "fcos")  # the detectors this probe runs


def _log(msg: str) -> None:
    print(f"[momentum {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _holdout(data: Path, pretrain_json: str, work: Path) -> str:
    """A COCO json of the train images of ``data`` that are not in ``pretrain_json``."""
    seen = {im["file_name"] for im in json.loads(Path(pretrain_json).read_text())["images"]}
    full = json.loads((data / "annotations" / "train.json").read_text())
    held = [im for im in full["images"] if im["file_name"] not in seen]
    if not held:
        raise SystemExit(f"{data}: every train image is in {pretrain_json}: nothing to hold out")
    ids = {im["id"] for im in held}
    out = work / "data" / "holdout_train.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    anns = [a for a in full["annotations"] if a["image_id"] in ids]
    out.write_text(json.dumps(dict(full, images=held, annotations=anns)))
    return str(out)


def _proposals(coco_json: str, images: str, out: Path, workers: int) -> str:
    if not out.exists():
        _log(f"proposals for {coco_json}")
    proposals_once(images, out, coco_json=coco_json, workers=workers)
    return str(out)


def _pretrain(det: str, base: float, args, props: str, images: str, work: Path) -> Path:
    run = work / det / f"base{base:g}_it{args.max_iter}_seed{args.seed}"
    if not (run / "model_final.pth").exists():
        _log(f"{det}: pre-training with base momentum {base:g} (seed {args.seed})")
        secs = Run(
            get_detector(det).config("pretrain", "cpu"),
            max_iter=args.max_iter,
            seed=args.seed,
            data=(
                f"dataloader.train.dataset.json_file={props}",
                f"dataloader.train.dataset.image_root={images}",
            ),
            extra=(f"model.base_momentum={base}",),
        ).train(run)
        (run / "seconds.json").write_text(json.dumps({"seconds": secs}))
    return run


def probe(det: str, checkpoint: Path, props: str, images: str, seed: int = 0) -> Dict[str, float]:
    """Fixed-set contrastive metrics of a pre-trained pair over two seeded views of each image."""
    import numpy as np
    import torch
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import LazyConfig, instantiate
    from detectron2.utils.events import EventStorage

    from aligndet_d2.data import load_proposals_json
    from aligndet_d2.modeling.contrastive import box_contrastive_loss
    from aligndet_d2.modeling.momentum import make_ids_unique

    torch.set_flush_denormal(True)
    cfg = LazyConfig.load(str(REPO / get_detector(det).config("pretrain", "cpu")))
    pair = instantiate(cfg.model)
    DetectionCheckpointer(pair).load(str(checkpoint))
    pair.train()  # the pre-training forward; every norm layer is frozen or GroupNorm
    mapper = instantiate(cfg.dataloader.train.mapper)
    dicts = load_proposals_json(props, images)
    np.random.seed(seed)
    torch.manual_seed(seed)
    sums: Dict[str, float] = {}
    n = 0
    with torch.no_grad(), EventStorage():
        for i in range(0, len(dicts) - 1, 2):  # batches of 2, as in training
            batch = [mapper(d) for d in dicts[i : i + 2]]
            views = [[dict(d["views"][v]) for d in batch] for v in range(2)]
            make_ids_unique(views)
            _, q = pair.online.forward_pretrain(views[0], with_losses=False)
            _, k = pair.momentum.forward_pretrain(views[1], with_losses=False)
            _, k_online = pair.online.forward_pretrain(views[1], with_losses=False)
            for name, keys in (("momentum", k), ("online", k_online)):
                loss, m = box_contrastive_loss(
                    q.emb[q.fixed], q.ids[q.fixed], keys.emb[keys.fixed], keys.ids[keys.fixed]
                )
                for key, value in (("loss", loss), ("acc", m["accuracy"])):
                    sums[f"{name}/{key}"] = sums.get(f"{name}/{key}", 0.0) + value.item()
                if name == "online":
                    for key in ("chance", "floor"):
                        sums[key] = sums.get(key, 0.0) + m[key].item()
            n += 1
    return {k: v / n for k, v in sums.items()} | {"batches": n}


def _shown(path: str) -> str:
    """A path as the report shows it: relative to the repository when inside it."""
    p = Path(path).resolve()
    return str(p.relative_to(REPO)) if p.is_relative_to(REPO) else str(path)


def markdown(report: Dict) -> str:
    lines = [
        "# Base momentum of the CPU pre-training configs",
        "",
        f"Machine: {report['machine']}. Date: {report['date']}.",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Each CPU pre-training config as it is ({report['max_iter']} iterations on the "
        f"{report['pretrain_images']} images of `{report['pretrain_json']}`, seed "
        f"{report['seed']}) with each base momentum; probe on the "
        f"{report['holdout_images']} other train images of {report['data']} (never pre-trained "
        "on; no val image is used), two seeded views each, fixed-set rows only (R-CNN: the "
        "pseudo-GT box of each proposal; RetinaNet / FCOS: its best-matching anchor / point). "
        "`init share`: the "
        "momentum detector's weight on its step-0 (random) neck and heads at the end of the run. "
        "`q->momentum`: online queries against the momentum detector's keys, as in training; "
        "`q->online`: against the online detector's own keys. Chance and floor: the loss levels "
        "`log(1 + N)` and `log(1 + N e^(-1/t))` of the q->online rows.",
        "",
        "| detector | base momentum | init share | probe loss q->momentum | probe acc q->momentum "
        "| probe loss q->online | probe acc q->online | chance | floor | pre-training min |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        p = r["probe"]
        lines.append(
            f"| {r['detector']} | {r['base']:g} | {100 * r['init_share']:.1f} % "
            f"| {p['momentum/loss']:.3f} | {p['momentum/acc']:.3f} | {p['online/loss']:.3f} "
            f"| {p['online/acc']:.3f} | {p['chance']:.2f} | {p['floor']:.2f} "
            f"| {r['seconds'] / 60:.1f} |"
        )
    if report.get("notes"):
        lines += ["", report["notes"].strip()]
    return "\n".join(lines) + "\n"


def main(argv: List[str] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--data",
        default="../shared/data/coco256",
        help="folder with images/ and annotations/train.json; its train images that are not "
        "pre-trained on are the probe's",
    )
    p.add_argument(
        "--pretrain-json",
        default=str(REPO / "datasets/coco64/annotations/train.json"),
        help="the images to pre-train on (the CPU configs' default: the bundled coco64 train)",
    )
    p.add_argument("--max-iter", type=int, default=192, help="the CPU configs' length")
    p.add_argument("--detectors", nargs="+", default=list(SUPPORTED), choices=SUPPORTED)
    p.add_argument("--bases", nargs="+", type=float, default=[0.996, 0.99, 0.98, 0.97])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="proposal processes")
    p.add_argument("--work-dir", default="output/bench_momentum")
    p.add_argument("--out", default=str(RESULTS / "momentum"), help="report path without suffix")
    p.add_argument("--notes", default="", help="markdown file whose text goes into the report")
    p.add_argument("--report-only", action="store_true", help=REPORT_ONLY_HELP)
    args = p.parse_args(argv)
    if args.report_only:
        return rewrite_report(Path(args.out), markdown)

    from aligndet_d2.modeling.momentum import initial_weight_share
    from aligndet_d2.utils.machine import machine_summary

    t0 = time.time()
    data, work = Path(args.data).resolve(), Path(args.work_dir).resolve()
    images = str(data / "images")
    split = {"pretrain": args.pretrain_json, "holdout": _holdout(data, args.pretrain_json, work)}
    props = {
        part: _proposals(split[part], images, work / "proposals" / f"{part}.json", args.workers)
        for part in ("pretrain", "holdout")
    }
    rows = []
    for det in args.detectors:
        for base in args.bases:
            run = _pretrain(det, base, args, props["pretrain"], images, work)
            cached = run / "probe.json"
            if not cached.exists():
                _log(f"{det}: probe of base {base:g}")
                result = probe(det, run / "model_final.pth", props["holdout"], images)
                cached.write_text(json.dumps(result))
            rows.append(
                {
                    "detector": det,
                    "base": base,
                    "init_share": initial_weight_share(args.max_iter, base),
                    "probe": json.loads(cached.read_text()),
                    "seconds": json.loads((run / "seconds.json").read_text())["seconds"],
                }
            )
    report = {
        "machine": machine_summary(),
        "date": time.strftime("%Y-%m-%d"),
        "command": "python benchmarks/momentum.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "data": args.data,
        "seed": args.seed,
        "max_iter": args.max_iter,
        "pretrain_json": _shown(args.pretrain_json),
        "pretrain_images": len(json.loads(Path(args.pretrain_json).read_text())["images"]),
        "holdout_images": len(json.loads(Path(split["holdout"]).read_text())["images"]),
        "rows": rows,
        "notes": Path(args.notes).read_text() if args.notes else "",
    }
    out = Path(args.out)
    write_report(report, out, markdown)
    _log(f"done in {(time.time() - t0) / 60:.1f} min: {out}.md")


if __name__ == "__main__":
    main()
