#!/usr/bin/env python
"""Aten operators and host syncs of one training step, pre-training vs supervised, CPU configs.

For each detector, one pre-training step (``pretrain``) and one supervised step of the same
detector with the same frozen backbone (``supervised_frozen``), on fixed batches of the bundled
data, after one warm-up step: every aten operator the step dispatches, forward and backward, is
counted (``aligndet_d2.utils.op_count.OpCounter``), with the host-sync operators among them
(scalar reads, data-dependent shapes), split by phase (momentum forward, online forward,
contrastive loss, backward, optimizer step, momentum update; ``other`` is the rest of the pair's
forward and the loss sum), with the operators that dominate each phase.

At 2 images per GPU a step is bound by kernel launches and host-device syncs, so these counts
rank the GPU cost of the code without a GPU. Writes benchmarks/results/step_ops.{md,json}:

    python benchmarks/step_ops.py
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from aligndet_d2.experiment import (
    DETECTORS,
    REPORT_ONLY_HELP,
    RESULTS,
    rewrite_report,
    write_report,
)
from aligndet_d2.experiment.steps import build_step, instrument, run_step

ARMS = ("pretrain", "supervised_frozen")
# Targets of the project (issue 41): operators of a pre-training step / supervised step, and
# host syncs of a pre-training step at most the supervised step's + this.
TARGET_OPS_RATIO = 1.5
TARGET_EXTRA_SYNCS = 10
TOP = 5  # operators listed per phase


def count_step(detector: str, arm: str) -> dict:
    """Operators of one step of ``arm`` (after one warm-up step), by phase."""
    from detectron2.utils.events import EventStorage

    from aligndet_d2.utils.op_count import OpCounter

    setup = build_step(detector, arm, num_batches=2)
    counter = OpCounter()
    with EventStorage(), instrument(setup, counter.phase):
        run_step(setup, 0, counter.phase)  # warm-up: lazy buffers, caches
        counter.clear()
        with counter:
            run_step(setup, 1, counter.phase)
    return {
        "ops": counter.total(),
        "syncs": counter.total_syncs(),
        "phases": {
            phase: {
                "ops": counter.total(phase),
                "syncs": counter.total_syncs(phase),
                "top": counter.ops[phase].most_common(TOP),
                "sync_ops": counter.syncs[phase].most_common(),
            }
            for phase in counter.ops
        },
    }


def markdown(r: dict) -> str:
    lines = [
        "# Operators of a training step: pre-training vs supervised",
        "",
        f"Machine: {r['machine']}. Date: {r['date']}. Command: `{r['command']}`.",
        "",
        "One step of each CPU config on fixed batches of datasets/coco64 (2 images), after one "
        "warm-up step; `supervised_frozen` is the fine-tune config with every backbone stage "
        "frozen. Every aten operator dispatched, forward and backward; host syncs are the "
        "operators the host waits for (scalar reads, data-dependent shapes: "
        "`aligndet_d2.utils.op_count.SYNC_OPS` and boolean indexing). Targets: operators "
        f"pre-train / supervised <= {r['targets']['ops_ratio']}, host syncs of pre-training <= "
        f"the supervised step's + {r['targets']['extra_syncs']}.",
        "",
        "| detector | aten ops, pre-train / supervised | ratio | target | host syncs, pre-train / "
        "supervised | target |",
        "|---|---|---|---|---|---|",
    ]
    for det, arms in r["detectors"].items():
        p, s = arms["pretrain"], arms["supervised_frozen"]
        ratio = p["ops"] / s["ops"]
        ok_ops = "met" if ratio <= r["targets"]["ops_ratio"] else "not met"
        ok_syncs = "met" if p["syncs"] <= s["syncs"] + r["targets"]["extra_syncs"] else "not met"
        lines.append(
            f"| {det} | {p['ops']} / {s['ops']} | {ratio:.2f} | {ok_ops} | "
            f"{p['syncs']} / {s['syncs']} | {ok_syncs} |"
        )
    for det, arms in r["detectors"].items():
        lines += [
            "",
            f"## {det}",
            "",
            "| arm | phase | ops | syncs | top operators | syncs by op |",
        ]
        lines.append("|---|---|---|---|---|---|")
        for arm, res in arms.items():
            for phase, ph in sorted(res["phases"].items(), key=lambda kv: -kv[1]["ops"]):
                top = ", ".join(f"{n} {c}" for n, c in ph["top"])
                syncs = ", ".join(f"{n} {c}" for n, c in ph["sync_ops"]) or "-"
                lines.append(f"| {arm} | {phase} | {ph['ops']} | {ph['syncs']} | {top} | {syncs} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--detectors", nargs="+", default=list(DETECTORS), choices=list(DETECTORS))
    p.add_argument("--out", default=str(RESULTS / "step_ops"), help="report path without suffix")
    p.add_argument("--report-only", action="store_true", help=REPORT_ONLY_HELP)
    args = p.parse_args(argv)
    if args.report_only:
        rewrite_report(Path(args.out), markdown)
        return 0
    import torch

    from aligndet_d2.utils.machine import machine_summary

    torch.set_num_threads(1)  # counts do not depend on threads; keep the machine free
    rows = {}
    for det in args.detectors:
        rows[det] = {}
        for arm in ARMS:
            print(f"{det} / {arm} ...", flush=True)
            rows[det][arm] = count_step(det, arm)
            res = rows[det][arm]
            print(f"  {res['ops']} aten ops, {res['syncs']} host syncs", flush=True)
    report = {
        "machine": machine_summary(),
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join(["python benchmarks/step_ops.py", *(argv or sys.argv[1:])]),
        "torch": torch.__version__,
        "targets": {"ops_ratio": TARGET_OPS_RATIO, "extra_syncs": TARGET_EXTRA_SYNCS},
        "detectors": rows,
    }
    write_report(report, Path(args.out), markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
