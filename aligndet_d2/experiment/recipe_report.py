"""``report.md`` of a recipe run: AP table, AP against iterations, AP by class frequency,
detections drawn on val images, and how well the proposals cover each labeled class."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List

from .logs import eval_points

__all__ = ["proposal_recall_per_class", "write_recipe_report"]

ARM_NAMES = {"aligndet": "AlignDet pre-trained", "scratch": "from scratch"}


def proposal_recall_per_class(proposals_json: str, labels_json: str) -> Dict[str, Dict]:
    """Recall of the proposals of the labeled images that they cover, per class.

    Returns:
        {class name: {"boxes": labeled boxes, "R@100/IoU0.5": %, "AR@100": %}}, for the
        labeled images that have proposals.
    """
    import torch

    from ..evaluation.recall import proposal_recall

    props = json.loads(Path(proposals_json).read_text())
    labels = json.loads(Path(labels_json).read_text())
    by_file = {im["file_name"]: im["id"] for im in props["images"]}
    boxes = defaultdict(list)
    for a in props["annotations"]:
        boxes[a["image_id"]].append(a)
    gt = defaultdict(lambda: defaultdict(list))  # class -> image file -> boxes
    names = {c["id"]: c["name"] for c in labels["categories"]}
    files = {im["id"]: im["file_name"] for im in labels["images"]}
    for a in labels["annotations"]:
        gt[names[a["category_id"]]][files[a["image_id"]]].append(a["bbox"])

    def xyxy(rows):
        t = torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)
        return torch.cat([t[:, :2], t[:, :2] + t[:, 2:]], dim=1)

    out = {}
    for name in [names[k] for k in sorted(names)]:
        per_image = [(f, b) for f, b in gt[name].items() if f in by_file]
        if not per_image:
            continue
        ranked = [sorted(boxes[by_file[f]], key=lambda a: a.get("rank", 0)) for f, _ in per_image]
        r = proposal_recall(
            [xyxy(b) for _, b in per_image],
            [xyxy([a["bbox"] for a in p]) for p in ranked],
            ks=(100,),
        )
        out[name] = {"boxes": r["num_gt"], "R@100/IoU0.5": r["R@100/IoU0.5"], "AR@100": r["AR@100"]}
    return out


def _fmt(v: Any) -> str:
    return "-" if v is None or v != v else f"{v:.2f}"


def _plot(curves: Dict[str, Dict[int, Dict[str, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    for arm, pts in curves.items():
        its = sorted(pts)
        ax.plot(its, [pts[i]["bbox/AP50"] for i in its], marker="o", label=ARM_NAMES[arm])
    ax.set_xlabel("fine-tune iterations")
    ax.set_ylabel("val AP50")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_recipe_report(recipe, runs: Dict[str, Path]) -> Path:
    """Writes ``<output>/report.md`` (and ``ap.png``, ``pictures/``) of a finished recipe."""
    from ..engine.predictor import predict_images
    from .recipe import LOW_RECALL

    out, state = recipe.out, recipe.state
    d = state["data"]
    lines: List[str] = [
        f"# {recipe.det.name} on {recipe.images}",
        "",
        f"Pool {d['pool']} images (pre-training, without labels; the val images left out), "
        f"{d['train']} labeled train images, {d['val']} val images"
        + ("" if d["val_given"] else " (held out of the labeled images)")
        + f", {len(d['classes'])} classes. Pre-training {state['pretrain_iters']} iterations "
        f"({recipe.pretrain_config}); fine-tuning {recipe.finetune_config}"
        + (" with parallel adapters beside the frozen backbone" if recipe.variant else "")
        + ".",
        "",
        "## AP on the val images",
        "",
        "| neck and heads | lr | iterations | AP | AP50 | AP75 | class-agnostic AP | "
        "class-agnostic AP50 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    results = {}
    for arm, run in runs.items():
        r = json.loads((run / "eval_results.json").read_text())
        results[arm] = r
        b, a = r.get("bbox", {}), r.get("bbox_agnostic", {})
        ft = state["finetune"][arm]
        lines.append(
            f"| {ARM_NAMES[arm]} | {ft['lr']:g} | {ft['iters']} | {_fmt(b.get('AP'))} | "
            f"{_fmt(b.get('AP50'))} | {_fmt(b.get('AP75'))} | {_fmt(a.get('AP'))} | "
            f"{_fmt(a.get('AP50'))} |"
        )
    if len(results) == 2:
        gain = results["aligndet"]["bbox"]["AP50"] - results["scratch"]["bbox"]["AP50"]
        lines += [
            "",
            f"AlignDet minus scratch: {gain:+.2f} AP50 (one run each, seed {recipe.s.seed}).",
        ]
    choice = state.get("lr_choice", {})
    if choice:
        lines += [
            "",
            "The lr and length of each arm were chosen on held-out labeled train images (never "
            "on val): held-out AP50 at 1/3, 2/3 and all of the schedule per candidate lr.",
            "",
            "| arm | lr | held-out AP50 (1/3, 2/3, all) | chosen |",
            "|---|---|---|---|",
        ]
        for arm, c in choice.items():
            for lr, pts in c["candidates"].items():
                vals = ", ".join(_fmt(pts[k]) for k in sorted(pts, key=float))
                mark = f"{c['fraction']:.0%} of the schedule" if float(lr) == c["lr"] else ""
                lines.append(f"| {ARM_NAMES[arm]} | {lr} | {vals} | {mark} |")
    curves = {
        arm: eval_points(run, state["finetune"][arm]["iters"], [("bbox", "AP50")])
        for arm, run in runs.items()
    }
    if any(len(c) > 1 for c in curves.values()):
        _plot(curves, out / "ap.png")
        lines += ["", "![AP50 against fine-tune iterations](ap.png)"]
    freq = {
        arm: r.get("bbox_by_frequency") for arm, r in results.items() if r.get("bbox_by_frequency")
    }
    if freq:
        bins = [k[len("AP_") :] for k in next(iter(freq.values())) if k.startswith("AP_")]
        lines += [
            "",
            "## AP by class frequency",
            "",
            "Classes binned by how many labeled train images contain them.",
            "",
            "| neck and heads | " + " | ".join(f"AP {b}" for b in bins) + " |",
            "|---|" + "---|" * len(bins),
        ]
        for arm, f in freq.items():
            lines.append(
                f"| {ARM_NAMES[arm]} | " + " | ".join(_fmt(f.get(f"AP_{b}")) for b in bins) + " |"
            )
        lines.append(
            "| classes | "
            + " | ".join(str(next(iter(freq.values())).get(f"classes_{b}", "")) for b in bins)
            + " |"
        )
    # Detections of the pre-trained arm on the first val images.
    val = json.loads(Path(d["val_json"]).read_text())
    files = [
        os.path.join(recipe.images, im["file_name"]) for im in val["images"][: recipe.s.pictures]
    ]
    best = runs["aligndet"]
    if files:
        shown = predict_images(
            str(best / "config.yaml"),
            str(best / "model_final.pth"),
            files,
            str(out / "predict_val"),
            score=0.5,
        )
        lines += ["", "## Detections on val images (score >= 0.5, AlignDet pre-trained)", ""]
        lines += [f"![{Path(p).name}]({Path(p).relative_to(out)})" for p in shown["pictures"]]
    recall = proposal_recall_per_class(str(out / "proposals" / "pool.json"), d["train_json"])
    if recall:
        lines += [
            "",
            "## How well the proposals cover the labeled boxes",
            "",
            "Pre-training learns from the selective-search boxes; a class they rarely cover gains "
            "little. Recall of the labeled train boxes by the first 100 proposals of their image.",
            "",
            "| class | labeled boxes | recall at IoU 0.5 (%) | AR@100 (%) |",
            "|---|---|---|---|",
        ]
        low = []
        for name, r in recall.items():
            lines.append(f"| {name} | {r['boxes']} | {r['R@100/IoU0.5']:.1f} | {r['AR@100']:.1f} |")
            if r["R@100/IoU0.5"] < LOW_RECALL:
                low.append(f"{name} ({r['R@100/IoU0.5']:.0f} %)")
        if low:
            warning = (
                f"Warning: the proposals cover fewer than {LOW_RECALL:.0f} % of the boxes of "
                + ", ".join(low)
                + ". Small or elongated objects are what selective search's default filter drops "
                "(boxes under 32 px, aspect beyond 1:3): run again with `--proposal-min-size 8` "
                "and / or `--proposal-mode quality` (more boxes, slower) in a new --output."
            )
            lines += ["", warning]
            print("  " + warning)
    secs = state.get("seconds", {})
    if secs:
        lines += ["", "## Wall time", "", "| stage | minutes |", "|---|---|"]
        lines += [f"| {k} | {v / 60:.1f} |" for k, v in secs.items()]
    lines += [
        "",
        "What these numbers can show: how this recipe does on this val set, one seed. What they "
        "cannot: a gain smaller than the spread between seeds or between held-out splits "
        "(benchmarks/README.md measures that spread on VOC).",
        "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
