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
from contextlib import contextmanager
from pathlib import Path

from aligndet_d2.experiment import DETECTORS, REPO, REPORT_ONLY_HELP, RESULTS, rewrite_report
from aligndet_d2.experiment.steps import ARMS, CAPACITY_ARMS, build_step, instrument, run_step

# Targets of the project (issue text): pre-training step / supervised frozen step, and peak memory.
TARGET_TIME_RATIO = 1.6
TARGET_MEMORY_RATIO = 1.2
# Frozen-backbone step / trained-backbone (CPU fine-tune) step, and peak memory.
TARGET_FROZEN_TIME_RATIO = 0.75
TARGET_FROZEN_MEMORY_RATIO = 0.85


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


def _arm(detector: str, arm: str, steps: int, warmup: int) -> dict:
    """Runs one arm in this process and returns its measurements."""
    from detectron2.utils.events import EventStorage

    setup = build_step(detector, arm)
    phases = defaultdict(float)

    @contextmanager
    def timed(name):
        t = time.perf_counter()
        yield
        phases[name] += time.perf_counter() - t

    with EventStorage(), instrument(setup, timed):
        # Memory above what the process held after building the model (and loading the batches).
        base = _status_mb("VmRSS")
        _reset_peak()
        for i in range(warmup):
            run_step(setup, i, timed)
        phases.clear()
        times = []
        for i in range(steps):
            t = time.perf_counter()
            run_step(setup, i, timed)
            times.append(time.perf_counter() - t)
        peak = _status_mb("VmHWM") - base
    total = sum(times)
    result = {
        "s_per_step": statistics.median(times),
        "mean_s_per_step": total / len(times),
        "peak_mem_mb": peak,
        "breakdown": {k: v / steps for k, v in phases.items()},
        "steps": steps,
        "batch": len(setup.batches[0]),
    }
    if arm == "pretrain":
        result["loader_images_per_s"] = _loader_throughput(setup.cfg)
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
