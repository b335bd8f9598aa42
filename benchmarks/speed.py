#!/usr/bin/env python
"""Training-step speed and memory: box-domain pre-training vs supervised training, CPU configs.

For each detector, in one run and one process per arm:

- ``pretrain``: a pre-training step (momentum forward on view 2, online forward on view 1,
  contrastive loss, backward, optimizer step, momentum update), with a breakdown of where the time
  goes;
- ``supervised_frozen``: a supervised step of the same detector with the same frozen backbone (the
  fine-tune config with every backbone stage frozen);
- ``finetune``: a step of the CPU fine-tune config as it is (backbone trained from its 4th block);
- ``supervised_adapters``: the frozen-backbone step with residual adapters beside the backbone's
  blocks (``model.backbone.bottom_up.adapters="parallel"``, Proper Reuse's recipe);
- ``supervised_frozen_wide`` (Faster R-CNN): the frozen-backbone step with the wider neck and heads
  of ``finetune_faster_rcnn_frozen_wide_voc_cpu.py`` (Proper Reuse's capacity);
- the data loader of pre-training (two-view mapper) in images per second.

Steps run on fixed pre-loaded batches (data loading excluded). Peak memory is the peak resident
memory above what the process held after building the model and loading the batches. Writes
benchmarks/results/speed.{md,json}. Run it alone on the machine:

    python benchmarks/speed.py
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

from aligndet_d2.experiment import (
    DETECTORS,
    REPO,
    REPORT_ONLY_HELP,
    RESULTS,
    get_detector,
    proposals_once,
    rewrite_report,
)

COCO64 = REPO / "datasets" / "coco64"

# Targets of the project (issue text): pre-training step / supervised frozen step, and peak memory.
TARGET_TIME_RATIO = 1.6
TARGET_MEMORY_RATIO = 1.2
# Frozen-backbone step / trained-backbone (CPU fine-tune) step, and peak memory.
TARGET_FROZEN_TIME_RATIO = 0.75
TARGET_FROZEN_MEMORY_RATIO = 0.85
ARMS = ("pretrain", "supervised_frozen", "finetune", "supervised_adapters")
# Capacity variants (Proper Reuse): arm -> fine-tune config, for the detectors that have one. Its
# model runs on the CPU config's bundled data (dataloader and class count of ``finetune``).
CAPACITY_ARMS = {
    "faster_rcnn": {
        "supervised_frozen_wide": get_detector("faster_rcnn").config(
            "finetune", "voc_cpu", "frozen_wide"
        )
    }
}


def _status_mb(field: str) -> float:
    """A memory field of /proc/self/status (VmRSS: resident now, VmHWM: peak resident) in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> None:
    # Writing 5 to clear_refs resets the peak resident set size (VmHWM) of the process.
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _proposals() -> str:
    """Selective-search proposals of the bundled train images (made once, then reused)."""
    out = REPO / "output" / "bench_speed" / "coco64_train_proposals.json"
    proposals_once(
        str(COCO64 / "images"), out, coco_json=str(COCO64 / "annotations" / "train.json")
    )
    return str(out)


def _clustered(proposals: str) -> str:
    """The proposals clustered as pretrain_box_detr_cpu.py expects (made once, then reused)."""
    from aligndet_d2.data.clusters import ClusterSettings, cluster_proposals

    out = REPO / "output" / "bench_speed" / "coco64_train_proposals_k16.json"
    if not out.exists():
        detr = get_detector("detr")
        settings = ClusterSettings(num_clusters=16, **detr.cluster_settings)
        cluster_proposals(
            proposals,
            str(COCO64 / "images"),
            detr.config("pretrain", "cpu"),
            str(out),
            settings,
        )
    return str(out)


def _load_cfg(path: str, overrides):
    from detectron2.config import LazyConfig

    return LazyConfig.apply_overrides(LazyConfig.load(str(REPO / path)), overrides)


def _arm(detector: str, arm: str, steps: int, warmup: int) -> dict:
    """Runs one arm in this process and returns its measurements."""
    import numpy as np
    import torch
    from detectron2.config import instantiate
    from detectron2.utils.events import EventStorage

    import aligndet_d2.modeling.momentum as momentum_module
    from aligndet_d2.modeling import FREEZE_ALL

    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    np.random.seed(0)
    det = get_detector(detector)
    paths = {"pretrain": det.config("pretrain", "cpu"), "finetune": det.config("finetune", "cpu")}
    common = ["dataloader.train.num_workers=0"]
    if arm == "pretrain":
        cfg = _load_cfg(
            paths["pretrain"],
            common
            + [
                "dataloader.train.dataset.json_file="
                + (_clustered(_proposals()) if detector == "detr" else _proposals()),
                f"dataloader.train.dataset.image_root={COCO64 / 'images'}",
            ],
        )
    elif arm in CAPACITY_ARMS.get(detector, {}):
        base = _load_cfg(paths["finetune"], common)
        cfg = _load_cfg(CAPACITY_ARMS[detector][arm], [])
        cfg.dataloader = base.dataloader
        cfg.model.roi_heads.num_classes = base.model.roi_heads.num_classes
    else:
        cfg = _load_cfg(paths["finetune"], common)
        net = cfg.model.backbone.get("bottom_up", cfg.model.backbone)  # DETR: no FPN
        if arm in ("supervised_frozen", "supervised_adapters"):
            net.freeze_at = FREEZE_ALL
        if arm == "supervised_adapters":
            net.adapters = "parallel"
    model = instantiate(cfg.model).train()
    cfg.optimizer.params.model = model
    opt = instantiate(cfg.optimizer)
    loader = iter(instantiate(cfg.dataloader.train))
    batches = [next(loader) for _ in range(4)]
    if arm == "pretrain":
        model.copy_online_to_momentum()

    phases = defaultdict(float)

    def timed(name, fn):
        def wrapper(*a, **k):
            t = time.perf_counter()
            out = fn(*a, **k)
            phases[name] += time.perf_counter() - t
            return out

        return wrapper

    if arm == "pretrain":
        model.momentum.forward_pretrain = timed("momentum forward", model.momentum.forward_pretrain)
        model.online.forward_pretrain = timed("online forward", model.online.forward_pretrain)
        momentum_module.box_contrastive_loss = timed(
            "contrastive loss", momentum_module.box_contrastive_loss
        )
    else:
        model.forward = timed("forward", model.forward)

    def step(i):
        losses = model(batches[i % len(batches)])
        loss = sum(losses.values())
        t = time.perf_counter()
        opt.zero_grad()
        loss.backward()
        phases["backward"] += time.perf_counter() - t
        t = time.perf_counter()
        opt.step()
        phases["optimizer step"] += time.perf_counter() - t
        if arm == "pretrain":
            t = time.perf_counter()
            model.update_momentum(0.996)
            phases["momentum update"] += time.perf_counter() - t

    with EventStorage():
        # Memory above what the process held after building the model (and loading the batches).
        base = _status_mb("VmRSS")
        _reset_peak()
        for i in range(warmup):
            step(i)
        phases.clear()
        times = []
        for i in range(steps):
            t = time.perf_counter()
            step(i)
            times.append(time.perf_counter() - t)
        peak = _status_mb("VmHWM") - base
    total = sum(times)
    result = {
        "s_per_step": statistics.median(times),
        "mean_s_per_step": total / len(times),
        "peak_mem_mb": peak,
        "breakdown": {k: v / steps for k, v in phases.items()},
        "steps": steps,
        "batch": len(batches[0]),
    }
    if arm == "pretrain":
        result["loader_images_per_s"] = _loader_throughput(cfg)
    return result


def _loader_throughput(cfg, batches: int = 24) -> float:
    """Images per second of the pre-training loader with its configured workers."""
    from detectron2.config import instantiate

    cfg.dataloader.train.num_workers = int(os.environ.get("SPEED_LOADER_WORKERS", 1))
    it = iter(instantiate(cfg.dataloader.train))
    next(it)  # start-up of the workers
    t = time.perf_counter()
    n = sum(len(next(it)) for _ in range(batches))
    return n / (time.perf_counter() - t)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--detectors", nargs="+", default=list(DETECTORS), choices=list(DETECTORS))
    p.add_argument("--steps", type=int, default=20, help="timed steps per arm")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--out", default=str(RESULTS / "speed"), help="report path without suffix")
    p.add_argument("--arm", nargs=2, metavar=("DETECTOR", "ARM"), help=argparse.SUPPRESS)
    p.add_argument("--report-only", action="store_true", help=REPORT_ONLY_HELP)
    args = p.parse_args(argv)
    if args.report_only:
        return rewrite_report(Path(args.out), markdown)
    if args.arm:  # child process: one arm
        print("RESULT " + json.dumps(_arm(args.arm[0], args.arm[1], args.steps, args.warmup)))
        return

    from aligndet_d2.utils.machine import machine_summary

    rows = {}
    for det in args.detectors:
        rows[det] = {}
        for arm in ARMS + tuple(CAPACITY_ARMS.get(det, {})):
            print(f"{det} / {arm} ...", flush=True)
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--arm",
                    det,
                    arm,
                    "--steps",
                    str(args.steps),
                    "--warmup",
                    str(args.warmup),
                ],
                capture_output=True,
                text=True,
                cwd=REPO,
            )
            line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
            if out.returncode or not line:
                sys.exit(f"{det}/{arm} failed:\n{out.stderr[-3000:]}")
            rows[det][arm] = json.loads(line[0][len("RESULT ") :])
            print(
                f"  {rows[det][arm]['s_per_step']:.3f} s/step, "
                f"{rows[det][arm]['peak_mem_mb']:.0f} MB peak",
                flush=True,
            )
    result = {
        "machine": machine_summary(),
        "command": "python benchmarks/speed.py" + "".join(f" {a}" for a in (argv or sys.argv[1:])),
        "date": time.strftime("%Y-%m-%d"),
        "torch_threads": __import__("torch").get_num_threads(),
        "detectors": rows,
        "targets": {
            "time_ratio": TARGET_TIME_RATIO,
            "memory_ratio": TARGET_MEMORY_RATIO,
            "frozen_time_ratio": TARGET_FROZEN_TIME_RATIO,
            "frozen_memory_ratio": TARGET_FROZEN_MEMORY_RATIO,
        },
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps(result, indent=2))
    Path(args.out + ".md").write_text(markdown(result))
    print(markdown(result))


def markdown(r) -> str:
    lines = [
        "# Training-step speed and memory (CPU configs)",
        "",
        f"Machine: {r['machine']}; {r['torch_threads']} torch threads. Date: {r['date']}.",
        "",
        f"Command: `{r['command']}`",
        "",
        "Batch of 2 bundled images (short side 288-352; pre-training on their selective-search "
        "proposals), 4 fixed pre-loaded batches, median of the timed steps. "
        "Peak memory: peak resident memory above what the process held after building the model "
        "and loading the batches, one process per arm.",
        "",
        "| detector | pre-training s/step | supervised, frozen backbone s/step | ratio | "
        "CPU fine-tune s/step | pre-train / fine-tune | peak MB pre-train | peak MB supervised "
        "| memory ratio | loader images/s | pre-training consumes images/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for det, a in r["detectors"].items():
        pt, sv, ft = a["pretrain"], a["supervised_frozen"], a["finetune"]
        lines.append(
            f"| {det} | {pt['s_per_step']:.3f} | {sv['s_per_step']:.3f} | "
            f"**{pt['s_per_step'] / sv['s_per_step']:.2f}** | {ft['s_per_step']:.3f} | "
            f"{pt['s_per_step'] / ft['s_per_step']:.2f} | {pt['peak_mem_mb']:.0f} | "
            f"{sv['peak_mem_mb']:.0f} | **{pt['peak_mem_mb'] / max(sv['peak_mem_mb'], 1):.2f}** | "
            f"{pt['loader_images_per_s']:.1f} | {pt['batch'] / pt['s_per_step']:.1f} |"
        )
    lines += [
        "",
        f"Targets: time ratio <= {r['targets']['time_ratio']}, memory ratio <= "
        f"{r['targets']['memory_ratio']}; the loader must deliver more images/s than "
        "pre-training consumes.",
    ]
    if all("supervised_adapters" in a for a in r["detectors"].values()):
        lines += frozen_markdown(r)
    lines += ["", "Where a step's time goes (mean seconds per step):", ""]
    for det, a in r["detectors"].items():
        for arm, res in a.items():
            parts = ", ".join(f"{k} {v:.3f}" for k, v in res["breakdown"].items())
            lines.append(f"- {det} / {arm}: {parts}")
    return "\n".join(lines) + "\n"


def frozen_markdown(r) -> list:
    """The frozen-backbone fine-tuning table: each step against the trained-backbone one."""
    t = r["targets"]
    lines = [
        "",
        "## Frozen-backbone fine-tuning (Proper Reuse)",
        "",
        "A supervised step of the CPU fine-tune config with its backbone trained from the 4th "
        "block (as it is), frozen whole, and frozen with parallel residual adapters; ratios to "
        "the trained-backbone step.",
        "",
        "| detector | trained backbone s/step | frozen s/step | time ratio | frozen + adapters "
        "s/step | time ratio | peak MB trained | peak MB frozen | memory ratio | peak MB frozen "
        "+ adapters | memory ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for det, a in r["detectors"].items():
        ft, fr, ad = a["finetune"], a["supervised_frozen"], a["supervised_adapters"]
        mem = max(ft["peak_mem_mb"], 1)
        lines.append(
            f"| {det} | {ft['s_per_step']:.3f} | {fr['s_per_step']:.3f} | "
            f"**{fr['s_per_step'] / ft['s_per_step']:.2f}** | {ad['s_per_step']:.3f} | "
            f"{ad['s_per_step'] / ft['s_per_step']:.2f} | {ft['peak_mem_mb']:.0f} | "
            f"{fr['peak_mem_mb']:.0f} | **{fr['peak_mem_mb'] / mem:.2f}** | "
            f"{ad['peak_mem_mb']:.0f} | {ad['peak_mem_mb'] / mem:.2f} |"
        )
    lines += [
        "",
        f"Targets (frozen against trained backbone): time ratio <= {t['frozen_time_ratio']}, "
        f"memory ratio <= {t['frozen_memory_ratio']}.",
    ]
    for det, a in r["detectors"].items():
        for arm in (x for x in a if x in CAPACITY_ARMS.get(det, {})):
            ft, w = a["finetune"], a[arm]
            mem = max(ft["peak_mem_mb"], 1)
            lines.append(
                f"\n{det}, frozen backbone with the wider neck and heads of "
                f"`{CAPACITY_ARMS[det][arm]}`: {w['s_per_step']:.3f} s/step "
                f"({w['s_per_step'] / ft['s_per_step']:.2f} of the trained-backbone step), "
                f"{w['peak_mem_mb']:.0f} MB peak ({w['peak_mem_mb'] / mem:.2f})."
            )
    return lines


if __name__ == "__main__":
    main()
