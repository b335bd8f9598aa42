#!/usr/bin/env python
"""AP of AlignDet pre-training + fine-tuning vs the same fine-tuning from scratch neck and heads.

For each detector (CPU configs) and seed: selective-search proposals of the train images (no labels)
-> box-domain pre-training -> export -> fine-tuning on the train labels at each budget, from the
export ("aligndet") and from the ImageNet backbone with neck and heads from scratch ("scratch"),
with the very same fine-tune config -> Detectron2's COCO evaluation on the val images (80-class AP,
AP50, AP75, AP for `person`), class-agnostic AP and AP50 by class frequency. Ablations change one
thing each (see VARIANTS).

Resumable: every finished run leaves its eval_results.json and is skipped next time; an interrupted
training run resumes from its last checkpoint. Writes <out>.md, <out>.json and <out>.png.

    python benchmarks/quality.py --data ../shared/data/coco256
    python benchmarks/quality.py --data ../shared/data/coco256 --variants keep_reg fast_proposals

Overrides (``--pretrain-opts``, ``--finetune-opts``) apply to every detector unless prefixed with
``DETECTOR:`` (``--finetune-opts faster_rcnn:optimizer.lr=0.02``); a run's directory is named after
the overrides that reach it.

Choices of the set-up are made with ``--holdout N``: the last N train images are held out and
evaluated on, the others pre-trained and fine-tuned on, and the val images are not touched.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List

from aligndet_d2.experiment import (
    RESULTS,
    Run,
    errorbar,
    export_once,
    get_detector,
    opts_for,
    opts_tag,
    proposals_once,
    rewrite_report,
    write_report,
)

# The detectors this protocol runs (the R-CNN and the dense ones; Cascade R-CNN and DETR run in
# the VOC harness, benchmarks/low_data.py).
SUPPORTED = ("faster_rcnn", "retinanet", "fcos")
# An ablation changes one thing against "main". Keys: proposals mode, pre-training length factor,
# export switch, extra fine-tune overrides (both arms), budgets it runs at ("short": the shortest
# only).
VARIANTS = {
    "main": {},
    "keep_reg": {"keep_reg": True, "budgets": "short"},
    # R-CNN only: the export without the pre-trained RPN.
    "drop_rpn": {"drop_rpn": True, "budgets": "short"},
    "fast_proposals": {"mode": "fast", "budgets": "short"},
    "pretrain_x2": {"pretrain_factor": 2.0, "budgets": "short"},
    "frozen_backbone_ft": {
        "finetune": ["model.backbone.bottom_up.freeze_at=-1"],
        "budgets": "short",
    },
    # The same with residual adapters beside every block of the frozen backbone (Proper Reuse).
    "frozen_adapters_ft": {
        "finetune": [
            "model.backbone.bottom_up.freeze_at=-1",
            "model.backbone.bottom_up.adapters=parallel",
        ],
        "budgets": "short",
    },
}
METRICS = [
    ("bbox", "AP"),
    ("bbox", "AP50"),
    ("bbox", "AP75"),
    ("bbox", "AP-person"),
    ("bbox_agnostic", "AP"),
    ("bbox_agnostic", "AP50"),
]
# AP50 by class frequency in the fine-tune's labeled images (the CPU configs'
# FrequencyCOCOEvaluator; runs made before it was added have none).
FREQUENCY_BINS = ("rare", "common", "frequent")


def _log(msg: str) -> None:
    print(f"[quality {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _parse_full_seeds(items: List[str]) -> Dict[str, int]:
    out = {}
    for item in items:
        det, _, n = item.partition("=")
        if det not in SUPPORTED or not n.isdigit() or int(n) < 1:
            raise SystemExit(f"--full-seeds: expected DETECTOR=N with N >= 1, got {item!r}")
        out[det] = int(n)
    return out


def _parse_detector_variants(items: List[str]) -> Dict[str, List[str]]:
    out = {}
    for item in items:
        det, _, names = item.partition("=")
        variants = names.split(",")
        if det not in SUPPORTED or not names or any(v not in VARIANTS for v in variants):
            raise SystemExit(
                f"--detector-variants: expected DETECTOR=VARIANT[,VARIANT...] with variants from "
                f"{list(VARIANTS)}, got {item!r}"
            )
        out[det] = variants
    return out


class Harness:
    def __init__(self, args):
        self.args = args
        self.data = Path(args.data).resolve()
        self.work = Path(args.work_dir).resolve()
        self.images = str(self.data / "images")
        self.train_json = str(self.data / "annotations" / "train.json")
        self.val_json = str(self.data / "annotations" / "val.json")
        self.name = self.data.name
        if args.holdout:
            self._hold_out(args.holdout)
        self.manifest_path = self.work / "runs.json"
        self.full_seeds = _parse_full_seeds(args.full_seeds)
        self.variants = _parse_detector_variants(args.detector_variants)
        for det in SUPPORTED:  # a misspelt prefix fails now, not after hours of other runs
            opts_for(det, args.pretrain_opts, "--pretrain-opts")
            opts_for(det, args.finetune_opts, "--finetune-opts")
        self.manifest = (
            json.loads(self.manifest_path.read_text()) if self.manifest_path.exists() else {}
        )

    def _hold_out(self, n: int) -> None:
        """Splits the train images (in file order) into a train part and the last ``n`` for
        evaluation; everything of this mode lives under <work-dir>/holdout<n>."""
        data = json.loads(Path(self.train_json).read_text())
        images = data["images"]
        if not 0 < n < len(images):
            raise SystemExit(f"--holdout {n}: {self.train_json} has {len(images)} images")
        self.work = self.work / f"holdout{n}"
        self.name = f"{self.name}_holdout{n}"
        for split, part in (("train", images[:-n]), ("val", images[-n:])):
            ids = {im["id"] for im in part}
            sub = dict(
                data,
                images=part,
                annotations=[a for a in data["annotations"] if a["image_id"] in ids],
            )
            path = self.work / "data" / f"{split}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(sub))
            setattr(self, f"{split}_json", str(path))

    def _record(self, key: str, seconds: float) -> None:
        self.manifest[key] = {"seconds": seconds}
        self.manifest_path.parent.mkdir(parents=True, exist_ok=True)
        self.manifest_path.write_text(json.dumps(self.manifest, indent=1))

    def proposals(self, mode: str) -> str:
        out = self.work / "proposals" / f"train_{mode}.json"
        if not out.exists():
            _log(f"proposals ({mode}) for {self.train_json}")
        secs = proposals_once(
            self.images, out, coco_json=self.train_json, mode=mode, workers=self.args.workers
        )
        if secs is not None:
            self._record(f"proposals/{mode}", secs)
        return str(out)

    def _datasets(self) -> List[str]:
        name = self.name
        return [
            f"dataloader.train.dataset.names.name={name}_train",
            f"dataloader.train.dataset.names.json_file={self.train_json}",
            f"dataloader.train.dataset.names.image_root={self.images}",
            f"dataloader.test.dataset.names.name={name}_val",
            f"dataloader.test.dataset.names.json_file={self.val_json}",
            f"dataloader.test.dataset.names.image_root={self.images}",
        ]

    def pretrain(self, det: str, variant: str, seed: int) -> Path:
        v = VARIANTS[variant]
        mode = v.get("mode", "soco")
        iters = int(round(self.args.pretrain_iters * v.get("pretrain_factor", 1.0)))
        opts = opts_for(det, self.args.pretrain_opts, "--pretrain-opts")
        tag = f"{mode}_it{iters}" + opts_tag(opts)
        run = self.work / det / "pretrain" / f"{tag}_seed{seed}"
        if not (run / "model_final.pth").exists():
            props = self.proposals(mode)
            _log(f"{det}: pre-training ({tag}, seed {seed}, {iters} iterations)")
            secs = Run(
                get_detector(det).config("pretrain", "cpu"),
                max_iter=iters,
                seed=seed,
                data=(
                    f"dataloader.train.dataset.json_file={props}",
                    f"dataloader.train.dataset.image_root={self.images}",
                ),
                checkpoint_period=self.args.checkpoint_period,
                extra=tuple(opts),
            ).train(run)
            self._record(str(run.relative_to(self.work)), secs)
        return run

    def finetune(self, det: str, variant: str, seed: int, budget: float, arm: str) -> Dict:
        v = VARIANTS[variant]
        iters = max(1, int(round(self.args.finetune_iters * budget)))
        extra = list(v.get("finetune", [])) + opts_for(
            det, self.args.finetune_opts, "--finetune-opts"
        )
        if v.get("keep_reg"):
            extra += list(get_detector(det).keep_reg)
        # Both arms of a variant share one fine-tune config; scratch runs are shared by variants
        # whose fine-tune config is the same.
        ft_key = "ft" + opts_tag(extra)
        name = arm if arm == "scratch" else f"{arm}_{variant}"
        run = self.work / det / ft_key / f"{name}_b{budget:g}_seed{seed}"
        if not (run / "eval_results.json").exists():
            if self.args.report_only:
                return {}
            init = ""
            if arm == "aligndet":
                pretrained = self.pretrain(det, variant, seed)
                init = str(
                    export_once(
                        pretrained,
                        keep_reg=v.get("keep_reg", False),
                        drop_rpn=v.get("drop_rpn", False),
                    )
                )
            _log(f"{det}: fine-tune {name} (budget {budget:g} = {iters} iterations, seed {seed})")
            secs = Run(
                get_detector(det).config("finetune", "cpu"),
                max_iter=iters,
                seed=seed,
                data=tuple(self._datasets()),
                init=init,
                checkpoint_period=self.args.checkpoint_period,
                extra=tuple(extra),
            ).train(run)
            self._record(str(run.relative_to(self.work)), secs)
            r = json.loads((run / "eval_results.json").read_text())
            _log(f"  AP {r['bbox']['AP']:.2f}, class-agnostic AP {r['bbox_agnostic']['AP']:.2f}")
        return {
            "iters": iters,
            "run": str(run.relative_to(self.work)),
            "results": json.loads((run / "eval_results.json").read_text()),
        }

    def run(self) -> Dict:
        rows = []
        budgets = sorted(self.args.budgets)
        for det in self.args.detectors:
            for variant in self.variants.get(det, self.args.variants):
                v = VARIANTS[variant]
                if v.get("drop_rpn") and not get_detector(det).has_rpn:
                    continue
                vb = budgets[:1] if v.get("budgets") == "short" else budgets
                arms = ["aligndet", "scratch"]
                full = self.full_seeds.get(det, len(self.args.seeds))
                for i, seed in enumerate(self.args.seeds):
                    # Seeds past the first `full` run the shortest budget only, where the target is.
                    for budget in vb if i < full else vb[:1]:
                        for arm in arms:
                            r = self.finetune(det, variant, seed, budget, arm)
                            if not r:  # --report-only and not run yet
                                continue
                            rows.append(
                                {
                                    "detector": det,
                                    "variant": variant,
                                    "seed": seed,
                                    "budget": budget,
                                    "arm": arm,
                                    **r,
                                }
                            )
        return {"rows": rows, "seconds": self._row_seconds()}

    def _row_seconds(self) -> Dict[str, float]:
        out: Dict[str, float] = {}
        for key, v in self.manifest.items():
            det = key.split("/")[0]
            if det in SUPPORTED:
                out[det] = out.get(det, 0.0) + v["seconds"]
        props = sum(v["seconds"] for k, v in self.manifest.items() if k.startswith("proposals/"))
        out["proposals"] = props
        return out


def summarize(rows: List[Dict]) -> List[Dict]:
    """Mean and min-max over seeds of each metric, per detector, variant, budget and arm."""
    groups: Dict[tuple, List[Dict]] = {}
    for r in rows:
        groups.setdefault((r["detector"], r["variant"], r["budget"], r["arm"]), []).append(r)
    out = []
    for (det, variant, budget, arm), rs in sorted(groups.items()):
        s = {
            "detector": det,
            "variant": variant,
            "budget": budget,
            "arm": arm,
            "iters": rs[0]["iters"],
            "seeds": sorted(r["seed"] for r in rs),
        }
        for task, metric in METRICS:
            vals = [r["results"][task].get(metric, float("nan")) for r in rs]
            s[f"{task}/{metric}"] = {
                "mean": statistics.fmean(vals),
                "min": min(vals),
                "max": max(vals),
            }
        freq = [r["results"].get("bbox_by_frequency", {}) for r in rs]
        s["by_frequency"] = {
            b: {"mean": statistics.fmean(v), "min": min(v), "max": max(v)}
            for b in FREQUENCY_BINS
            for v in [[f.get(f"AP50_{b}", float("nan")) for f in freq]]
            if all(x == x for x in v)  # every seed has it and the bin has a class
        }
        out.append(s)
    return out


def _fmt(m) -> str:
    if len({m["min"], m["max"]}) == 1:
        return f"{m['mean']:.2f}"
    return f"{m['mean']:.2f} ({m['min']:.2f}-{m['max']:.2f})"


def markdown(report: Dict) -> str:
    a = report["args"]
    lines = [
        "# AlignDet pre-training vs neck and heads from scratch (CPU configs)",
        "",
        f"Machine: {report['machine']}. Date: {report['date']}.",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Data: {a['data']} (pre-training on the train images' selective-search proposals, no "
        "labels; fine-tuning on the train labels; evaluation on "
        + (
            f"the last {a['holdout']} train images, held out from both, with"
            if a.get("holdout")
            else "the val images with"
        )
        + " Detectron2's COCO evaluator). Pre-training: "
        f"{a['pretrain_iters']} iterations; full fine-tune schedule: {a['finetune_iters']} "
        f"iterations (batch 2). Seeds: {a['seeds']}; each seed has its own pre-training and "
        "fine-tunes. Cells: mean (min-max over seeds). Class-agnostic AP: all classes merged into "
        "one, top 100 detections per image.",
        "",
        "| detector | variant | fine-tune iters | arm | seeds | class-agnostic AP | "
        "class-agnostic AP50 | AP person | AP | AP50 | AP75 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in report["summary"]:
        lines.append(
            f"| {s['detector']} | {s['variant']} | {s['iters']} | {s['arm']} | {len(s['seeds'])} | "
            f"{_fmt(s['bbox_agnostic/AP'])} | {_fmt(s['bbox_agnostic/AP50'])} | "
            f"{_fmt(s['bbox/AP-person'])} | {_fmt(s['bbox/AP'])} | {_fmt(s['bbox/AP50'])} | "
            f"{_fmt(s['bbox/AP75'])} |"
        )
    freq = [s for s in report["summary"] if s.get("by_frequency")]
    if freq:
        lines += [
            "",
            "AP50 by class frequency (COCO-style AP50 averaged over the classes of each bin, the "
            "bins by the number of labeled train images that contain the class: rare 1-10, common "
            "11-100, frequent > 100; a class in no labeled image is rare; -: no class in the bin):",
            "",
            "| detector | variant | fine-tune iters | arm | seeds | "
            + " | ".join(f"AP50 {b}" for b in FREQUENCY_BINS)
            + " |",
            "|---|---|---|---|---|" + "---|" * len(FREQUENCY_BINS),
        ]
        for s in freq:
            cells = [
                _fmt(s["by_frequency"][b]) if b in s["by_frequency"] else "-"
                for b in FREQUENCY_BINS
            ]
            lines.append(
                f"| {s['detector']} | {s['variant']} | {s['iters']} | {s['arm']} | "
                f"{len(s['seeds'])} | " + " | ".join(cells) + " |"
            )
    lines += [
        "",
        "Wall time of each detector (pre-training, fine-tunes and evaluations of every seed and "
        "variant run so far; proposals once for all):",
        "",
    ]
    for k, v in report["seconds"].items():
        lines.append(f"- {k}: {v / 60:.1f} min")
    if report.get("notes"):
        lines += ["", "## Notes", "", report["notes"]]
    return "\n".join(lines) + "\n"


def plot(report: Dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dets = sorted({s["detector"] for s in report["summary"]})
    keys = [
        ("bbox_agnostic/AP", "class-agnostic AP"),
        ("bbox/AP-person", "AP person"),
        ("bbox/AP", "80-class AP"),
    ]
    fig, axes = plt.subplots(
        len(dets), len(keys), figsize=(4.5 * len(keys), 3.6 * len(dets)), squeeze=False
    )
    for i, det in enumerate(dets):
        for j, (key, title) in enumerate(keys):
            ax = axes[i][j]
            for arm, color in (("aligndet", "tab:red"), ("scratch", "tab:blue")):
                pts = sorted(
                    (s["iters"], s[key])
                    for s in report["summary"]
                    if s["detector"] == det and s["variant"] == "main" and s["arm"] == arm
                )
                if not pts:
                    continue
                errorbar(
                    ax,
                    pts,
                    color=color,
                    label="AlignDet pre-trained" if arm == "aligndet" else "from scratch",
                )
            ax.set_title(f"{det}: {title}")
            ax.set_xlabel("fine-tune iterations")
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:  # a grid of ablations only has no "main" curve
                ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--data",
        default="../shared/data/coco256",
        help="folder with images/ and annotations/{train,val}.json",
    )
    p.add_argument("--detectors", nargs="+", default=["faster_rcnn"], choices=list(SUPPORTED))
    p.add_argument("--variants", nargs="+", default=["main"], choices=list(VARIANTS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument(
        "--budgets",
        nargs="+",
        type=float,
        default=[0.25, 0.5, 1.0],
        help="fractions of the full fine-tune schedule",
    )
    p.add_argument(
        "--detector-variants",
        nargs="*",
        default=[],
        metavar="DETECTOR=VARIANT[,VARIANT...]",
        help="the variants of DETECTOR, instead of --variants",
    )
    p.add_argument(
        "--full-seeds",
        nargs="*",
        default=[],
        metavar="DETECTOR=N",
        help="run every budget for the first N seeds of DETECTOR only, the shortest for the rest",
    )
    p.add_argument("--pretrain-iters", type=int, default=384)
    p.add_argument("--finetune-iters", type=int, default=384, help="the full schedule (budget 1)")
    p.add_argument(
        "--pretrain-opts",
        nargs="*",
        default=[],
        metavar="[DETECTOR:]KEY=VALUE",
        help="config overrides for pre-training; a DETECTOR: prefix limits one to that detector",
    )
    p.add_argument(
        "--finetune-opts",
        nargs="*",
        default=[],
        metavar="[DETECTOR:]KEY=VALUE",
        help="config overrides for both fine-tune arms; a DETECTOR: prefix limits one to that "
        "detector",
    )
    p.add_argument("--checkpoint-period", type=int, default=100, help="for resuming long runs")
    p.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing: report the runs of this grid that have finished in --work-dir; "
        "without a work dir, write <out>.md and .png again from <out>.json",
    )
    p.add_argument(
        "--holdout",
        type=int,
        default=0,
        metavar="N",
        help="tuning mode: evaluate on the last N train images, train on the others; the val "
        "images are not used",
    )
    p.add_argument("--workers", type=int, default=2, help="proposal processes")
    p.add_argument("--work-dir", default="output/bench_quality")
    p.add_argument("--out", default=str(RESULTS / "quality"), help="report path without suffix")
    p.add_argument("--notes", default="", help="markdown file whose text goes into the report")
    args = p.parse_args(argv)

    from aligndet_d2.utils.machine import machine_summary

    if args.report_only and not Path(args.work_dir).is_dir():
        return rewrite_report(Path(args.out), markdown, plot)
    t0 = time.time()
    res = Harness(args).run()
    report = {
        "machine": machine_summary(),
        "date": time.strftime("%Y-%m-%d"),
        "command": "python benchmarks/quality.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "args": {k: v for k, v in vars(args).items() if k not in ("out", "notes")},
        "summary": summarize(res["rows"]),
        "rows": res["rows"],
        "seconds": res["seconds"],
        "notes": Path(args.notes).read_text() if args.notes else "",
    }
    out = Path(args.out)
    write_report(report, out, markdown, plot)
    _log(f"done in {(time.time() - t0) / 60:.1f} min: {out}.md")


if __name__ == "__main__":
    main()
