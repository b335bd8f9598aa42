#!/usr/bin/env python
"""Rewrites the tables of benchmarks/README.md and the README's headline table from the benchmark
reports in benchmarks/results/.

    python benchmarks/readme_tables.py

Each lies between markers: `<!-- results:start -->` / `<!-- results:end -->` in
benchmarks/README.md, `<!-- headline:start -->` / `<!-- headline:end -->` in README.md.
"""

from __future__ import annotations

import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
START, END = "<!-- results:start -->", "<!-- results:end -->"
HEADLINE_START, HEADLINE_END = "<!-- headline:start -->", "<!-- headline:end -->"
# The README's headline rows: (detector, fine-tune and AlignDet arm as the low-data report names
# them, labeled %, pre-training config and overrides, fine-tune config and overrides).
HEADLINE = (
    (
        "faster_rcnn",
        "ft_frozen_backbone.bottom_up.adapters-parallel",
        "aligndet it1250",
        10.0,
        "pretrain_box_faster_rcnn_cpu.py train.max_iter=1250",
        "finetune_faster_rcnn_frozen_voc_cpu.py model.backbone.bottom_up.adapters=parallel",
    ),
    (
        "faster_rcnn",
        "ft_frozen_backbone.bottom_up.adapters-parallel",
        "aligndet it1250",
        5.0,
        "pretrain_box_faster_rcnn_cpu.py train.max_iter=1250",
        "finetune_faster_rcnn_frozen_voc_cpu.py model.backbone.bottom_up.adapters=parallel",
    ),
    (
        "faster_rcnn",
        "ft",
        "aligndet it2500",
        10.0,
        "pretrain_box_faster_rcnn_cpu.py train.max_iter=2500",
        "finetune_faster_rcnn_voc_cpu.py",
    ),
    (
        "cascade_rcnn",
        "ft",
        "aligndet it312",
        10.0,
        "pretrain_box_cascade_rcnn_cpu.py train.max_iter=312",
        "finetune_cascade_rcnn_voc_cpu.py",
    ),
    (
        "fcos",
        "ft",
        "aligndet it1250",
        10.0,
        "pretrain_box_fcos_cpu.py train.max_iter=1250",
        "finetune_fcos_voc_cpu.py",
    ),
    (
        "retinanet",
        "ft",
        "aligndet it1250",
        10.0,
        "pretrain_box_retinanet_cpu.py train.max_iter=1250",
        "finetune_retinanet_voc_cpu.py",
    ),
    (
        "detr",
        "ft",
        "aligndet it312 (k256)",
        10.0,
        "pretrain_box_detr_cpu.py train.max_iter=312",
        "finetune_detr_voc_cpu.py",
    ),
)


def _load(name: str):
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def quality_table(r) -> str:
    lines = [
        f"AP on the coco256 val images after fine-tuning on its 128 train images "
        f"([`benchmarks/results/quality.md`](benchmarks/results/quality.md), `{r['command']}`; "
        f"{r['machine'].split(';')[0]}). Mean (min-max) over the seeds run (column `seeds`); each "
        "seed has its own pre-training and fine-tunes.",
        "",
        "| detector | variant | fine-tune iters | neck and heads | seeds | class-agnostic AP | "
        "AP person | AP |",
        "|---|---|---|---|---|---|---|---|",
    ]
    # "main" first, then the ablations (each with the baseline of its own fine-tune config).
    for s in sorted(r["summary"], key=lambda s: (s["detector"], s["variant"] != "main")):
        arm = "AlignDet" if s["arm"] == "aligndet" else "from scratch"
        cells = []
        for key in ("bbox_agnostic/AP", "bbox/AP-person", "bbox/AP"):
            m = s[key]
            cells.append(
                f"{m['mean']:.2f}"
                + (f" ({m['min']:.2f}-{m['max']:.2f})" if m["min"] != m["max"] else "")
            )
        lines.append(
            f"| {s['detector']} | {s['variant']} | {s['iters']} | {arm} | {len(s['seeds'])} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines)


def speed_table(r) -> str:
    lines = [
        f"Training-step time and memory ([`benchmarks/results/speed.md`]"
        f"(benchmarks/results/speed.md), `{r['command']}`; {r['machine'].split(';')[0]}; batch 2):",
        "",
        "| detector | pre-training s/step | supervised, same frozen backbone | ratio | "
        "CPU fine-tune s/step | peak memory ratio | frozen / trained backbone: time, memory |",
        "|---|---|---|---|---|---|---|",
    ]
    for det, a in r["detectors"].items():
        pt, sv, ft = a["pretrain"], a["supervised_frozen"], a["finetune"]
        lines.append(
            f"| {det} | {pt['s_per_step']:.2f} | {sv['s_per_step']:.2f} | "
            f"{pt['s_per_step'] / sv['s_per_step']:.2f} | {ft['s_per_step']:.2f} | "
            f"{pt['peak_mem_mb'] / max(sv['peak_mem_mb'], 1):.2f} | "
            f"{sv['s_per_step'] / ft['s_per_step']:.2f}, "
            f"{sv['peak_mem_mb'] / max(ft['peak_mem_mb'], 1):.2f} |"
        )
    return "\n".join(lines)


def gpu_table(runs) -> str:
    """The prepared GPU check, one row per detector and AMP precision."""
    first = runs[0]
    detr = any("detr" in r["results"] for r in runs)
    nets = "R-50-FPN, DETR's R-50" if detr else "R-50-FPN"
    lines = [
        f"On a GPU ([`benchmarks/results/gpu_check.md`](benchmarks/results/gpu_check.md), "
        f"`{first['command'].split(' --precision ')[0].split(' --iters ')[0]} --precision P`; "
        f"{first['device']}, torch {first['torch']}): the paper-setting configs ({nets}; random "
        "weights, frozen backbone), 2 images per step, Detectron2's AMPTrainer:",
        "",
        "| detector | AMP | pre-training s/step | supervised, same frozen backbone | ratio | "
        "peak GPU MiB pre-training / supervised |",
        "|---|---|---|---|---|---|",
    ]
    for r in runs:
        amp = r["command"].split("--precision ")[-1]
        for det, a in r["results"].items():
            pt, sv = a["pretrain"], a["supervised_frozen"]
            lines.append(
                f"| {det} | {amp} | {pt['s_per_iter']:.3f} | {sv['s_per_iter']:.3f} | "
                f"{pt['s_per_iter'] / sv['s_per_iter']:.2f} | "
                f"{pt['peak_gpu_mb']:.0f} / {sv['peak_gpu_mb']:.0f} |"
            )
    return "\n".join(lines)


def proposals_table(r) -> str:
    lines = [
        f"Selective-search throughput ([`benchmarks/results/proposals.md`]"
        f"(benchmarks/results/proposals.md), `{r['command']}`, after "
        "`pip install -r requirements/benchmark.txt`):",
        "",
        "| engine | images/s per process | kept boxes per image |",
        "|---|---|---|",
    ]
    for name, e in r["engines"].items():
        if "first" not in name:
            lines.append(f"| {name} | {e['images_per_s']:.2f} | {e['kept_per_image']:.0f} |")
    s = r["scaling"]
    lines += [
        "",
        f"`soco` is {r['soco_vs_package']:.1f}x the pure-Python `selectivesearch` package per "
        f"process; the tool runs {s['speedup']:.2f}x faster with 2 processes than with 1 "
        f"({s['images']} images).",
    ]
    return "\n".join(lines)


def momentum_table(r) -> str:
    lines = [
        f"Base momentum of the CPU pre-training configs ([`benchmarks/results/momentum.md`]"
        f"(benchmarks/results/momentum.md), `{r['command']}`; {r['machine'].split(';')[0]}; "
        f"{r['max_iter']} iterations, seed {r['seed']}): the fixed-set contrastive loss and "
        f"accuracy of the online detector on {r['holdout_images']} held-out train images (lower "
        "loss is better; chance and floor are its no-information and perfect levels). The CPU "
        "configs use 0.97.",
        "",
        "| detector | base momentum | random init left at the end | probe loss | probe accuracy "
        "| chance / floor |",
        "|---|---|---|---|---|---|",
    ]
    for row in r["rows"]:
        p = row["probe"]
        lines.append(
            f"| {row['detector']} | {row['base']:g} | {100 * row['init_share']:.1f} % | "
            f"{p['online/loss']:.3f} | {p['online/acc']:.3f} | {p['chance']:.2f} / "
            f"{p['floor']:.2f} |"
        )
    return "\n".join(lines)


def low_data_table(r) -> str:
    # The grid is filled over several sessions: name every machine its runs ran on.
    machines = dict.fromkeys(m.split(";")[0] for m in r["run_machines"])
    lines = [
        f"The low-data protocol on PASCAL VOC 2007 ([`benchmarks/results/low_data.md`]"
        f"(benchmarks/results/low_data.md), `{r['command']}`; runs on {' and '.join(machines)}): "
        f"AlignDet pre-training on the {r['pool_images']} VOC `train` images without labels, "
        f"fine-tuning on p % of them labeled, VOC AP50 on the first {r['args']['val_images']} "
        "`val` images. AlignDet minus scratch, paired by fold: mean (min to max). Fine-tune `ft`: "
        "the CPU VOC configs as they are (Lite0 trained from its 4th block); `ft_frozen`: with the "
        "backbone frozen in both arms; `ft_frozen_backbone.bottom_up.adapters-parallel`: frozen "
        "with parallel residual adapters beside every block, in both arms.",
        "",
        "| detector | fine-tune | labeled | AlignDet pre-training (epochs of the pool) | folds | "
        "scratch VOC AP50 | delta VOC AP50 | folds above | delta AP | delta class-agnostic AP "
        "| target |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for d in r["summary"]["paired"]:
        cells = []
        for key in ("bbox_voc/AP50", "bbox/AP", "bbox_agnostic/AP"):
            m = d[key]
            cells.append(
                f"{m['mean']:+.2f}"
                + (f" ({m['min']:+.2f} to {m['max']:+.2f})" if m["min"] != m["max"] else "")
            )
        # The arm's variant ("aligndet it312 (fg_box_loss)") and a row whose folds come from
        # different pre-training runs are said in the pre-training cell.
        pre = f"{d['pretrain_epochs']:.2g}"
        if " (" in d["arm"]:
            pre += " (" + d["arm"].split(" (", 1)[1]
        pre += f"; {d['mixed_pretraining']}" if d.get("mixed_pretraining") else ""
        lines.append(
            f"| {d['detector']} | {d['finetune']} | {d['percent']:g} % | {pre} | "
            f"{len(d['seeds'])} | {d['bbox_voc/AP50']['scratch_mean']:.2f} | {cells[0]} | "
            f"{d['bbox_voc/AP50']['folds_above']}/{len(d['seeds'])} | {cells[1]} | {cells[2]} | "
            f"{d['target']} |"
        )
    for d in r["summary"].get("backbone_modes", []):
        modes = list(d["modes"])
        n = len(d["seeds"])
        lines += [
            "",
            f"Backbone modes (Proper Reuse), {d['detector']}, {d['percent']:g} % labeled: final "
            f"VOC AP50, mean over folds {d['seeds']}; AlignDet minus the best scratch arm of any "
            "mode in the same fold, and in how many folds it is above.",
            "",
            "| backbone | scratch | AlignDet | AlignDet minus best scratch | folds above |",
            "|---|---|---|---|---|",
        ]
        for m in modes:
            v = d["vs_best_scratch"][m]
            lines.append(
                f"| {d['modes'][m]} | {sum(d['scratch'][m]) / n:.2f} | "
                f"{sum(d['aligndet'][m]) / n:.2f} | {v['mean']:+.2f} ({v['min']:+.2f} to "
                f"{v['max']:+.2f}) | {v['folds_above']}/{n} |"
            )
        for m, a in d.get("arms", {}).items():
            if a != d["arm"]:
                lines.append(
                    f"\n{d['modes'][m]}: AlignDet is the export of its own pre-training ({a})."
                )
    return "\n".join(lines)


def _config(text: str) -> str:
    name, *overrides = text.split()
    return f"[`{name}`](configs/{name})" + "".join(f" `{o}`" for o in overrides)


def headline_table(r) -> str:
    """The README's table: a few rows of the low-data report, each naming its configs."""
    paired = {
        (d["detector"], d["finetune"], d["arm"], d["percent"]): d for d in r["summary"]["paired"]
    }
    lines = [
        "| detector | pre-training (config, overrides) | fine-tune (config, overrides) | labeled | "
        "folds | scratch VOC AP50 | AlignDet VOC AP50 | gain (min to max) | folds above |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for det, ft, arm, percent, pre, fine in HEADLINE:
        d = paired.get((det, ft, arm, percent))
        if d is None:
            continue  # not in the report (yet)
        m, n = d["bbox_voc/AP50"], len(d["seeds"])
        lines.append(
            f"| {det} | {_config(pre)} | {_config(fine)} | {percent:g} % | {n} | "
            f"{m['scratch_mean']:.2f} | {m['scratch_mean'] + m['mean']:.2f} | {m['mean']:+.2f}"
            + (f" ({m['min']:+.2f} to {m['max']:+.2f})" if n > 1 else "")
            + f" | {m['folds_above']}/{n} |"
        )
    return "\n".join(lines)


def _between(path: Path, start: str, end: str, body: str) -> None:
    text = path.read_text()
    a, b = text.index(start) + len(start), text.index(end)
    path.write_text(text[:a] + "\n" + body + "\n" + text[b:])


def main() -> None:
    parts = []
    for name, fn in (
        ("low_data", low_data_table),
        ("quality", quality_table),
        ("speed", speed_table),
        ("proposals", proposals_table),
        ("momentum", momentum_table),
    ):
        r = _load(name)
        if r is not None:
            parts.append(fn(r))
        if name == "speed":
            gpu = [r for r in map(_load, ("gpu_check_float16", "gpu_check_bfloat16")) if r]
            if gpu:
                parts.append(gpu_table(gpu))
    page = REPO / "benchmarks" / "README.md"
    # The tables link the reports from the repository root; this page sits in benchmarks/.
    _between(page, START, END, "\n\n".join(parts).replace("](benchmarks/", "]("))
    low_data = _load("low_data")
    if low_data is not None:
        _between(REPO / "README.md", HEADLINE_START, HEADLINE_END, headline_table(low_data))
    print(f"updated {page} from {len(parts)} report(s) and the README's headline table")


if __name__ == "__main__":
    main()
