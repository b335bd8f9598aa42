#!/usr/bin/env python
"""The prepared GPU check: paper-setting pre-training and supervised steps on one GPU, with AMP.

For each detector, in one process: ``pretrain`` (the paper-setting box-domain pre-training config,
R-50(-FPN) with random weights, frozen backbone, two views of coco256 train images and their
selective-search proposals (DETR: their 256 clusters as classes), Detectron2's ``AMPTrainer`` and a
momentum update after each step), then ``supervised_frozen`` (the paper-setting fine-tune config
with the same frozen backbone on the same images' human boxes). Both at the paper's per-GPU batch
(2) and input sizes. Prints s/iter (median of the timed steps, data loading excluded: the steps
cycle over pre-loaded batches), their ratio, peak GPU memory and the mean loss over the first and
the last cycle of batches (finite or not), and the aten operators and host syncs of one more step
(``aligndet_d2.utils.op_count.OpCounter``). Run through scripts/gpu_check.sh, which installs what a
bare GPU image lacks; with the set-up done, directly:

    python benchmarks/gpu_check.py --data .gpu_check/coco256 --detectors faster_rcnn fcos
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import sys
import time
from pathlib import Path

from aligndet_d2.experiment import DETECTORS, REPO, get_detector

# DETR pre-trains on cluster pseudo-labels (tools/cluster_proposals.py, run by the prepare script).
PROPOSALS = {"detr": "train_proposals_k256.json"}
LOADED_BATCHES = 4  # pre-loaded batches the timed steps cycle over


def _configs(detector: str, data: Path, batch: int, device: str):
    """The two arms' configs: pre-training and the supervised step, the backbone frozen in both."""
    from detectron2.config import LazyCall as L
    from detectron2.config import LazyConfig

    from aligndet_d2.data import register_coco
    from aligndet_d2.modeling import FrozenResNet

    images = str(data / "images")
    pre = LazyConfig.load(str(REPO / get_detector(detector).config("pretrain", "paper")))
    proposals = PROPOSALS.get(detector, "train_proposals.json")
    pre.dataloader.train.dataset.update(
        json_file=str(data / "annotations" / proposals), image_root=images
    )
    sup = LazyConfig.load(str(REPO / get_detector(detector).config("finetune", "paper")))
    sup.dataloader.train.dataset.names = L(register_coco)(
        name="coco256_train_gpu_check",
        json_file=str(data / "annotations" / "train.json"),
        image_root=images,
    )
    # The ResNet itself: under the FPN (R-CNNs, dense detectors) or DETR's backbone.
    resnet = sup.model.backbone.get("bottom_up", sup.model.backbone)
    resnet.update(_target_=FrozenResNet, freeze_at=5)
    for cfg in (pre, sup):
        cfg.dataloader.train.update(total_batch_size=batch, num_workers=2)
        cfg.train.device = device
    return {"pretrain": pre, "supervised_frozen": sup}


def _calibrate_frozen_bn(detector, batch) -> None:
    """Gives a randomly initialised backbone's FrozenBN layers the statistics of their inputs.

    With random conv weights and identity FrozenBN, activations grow through the residual stages
    and a float16 forward overflows within a few steps (the check would measure a diverging run).
    One forward of a batch of real images sets each layer's mean and variance to those of what it
    receives, as trained BatchNorm statistics would; the step's cost is unchanged.
    """
    import torch
    from detectron2.layers import FrozenBatchNorm2d

    def set_stats(module, inputs):
        x = inputs[0].float()
        module.running_mean.copy_(x.mean(dim=(0, 2, 3)))
        module.running_var.copy_(x.var(dim=(0, 2, 3)))

    backbone = getattr(detector.backbone, "bottom_up", detector.backbone)
    hooks = [
        m.register_forward_pre_hook(set_stats)
        for m in backbone.modules()
        if isinstance(m, FrozenBatchNorm2d)
    ]
    with torch.no_grad():
        if hasattr(detector, "preprocess_image"):  # Detectron2's detectors
            backbone(detector.preprocess_image(batch).tensor)
        else:  # DETR: (images, padding mask)
            backbone(detector.preprocess(batch)[0].tensor)
    for h in hooks:
        h.remove()


def _arm(cfg, arm: str, iters: int, warmup: int, precision) -> dict:
    """Builds one arm on the GPU, runs warmup + iters steps and returns its measurements."""
    import torch
    from detectron2.config import instantiate
    from detectron2.engine import AMPTrainer, SimpleTrainer
    from detectron2.utils.events import EventStorage

    from aligndet_d2.utils.op_count import OpCounter

    torch.manual_seed(0)
    model = instantiate(cfg.model).to(cfg.train.device).train()
    cfg.optimizer.params.model = model
    opt = instantiate(cfg.optimizer)
    loader = iter(instantiate(cfg.dataloader.train))
    batches = [next(loader) for _ in range(LOADED_BATCHES)]
    del loader
    if arm == "pretrain":  # calibrated on the first view of the first batch
        _calibrate_frozen_bn(model.online, [d["views"][0] for d in batches[0]])
        model.copy_online_to_momentum()
    else:
        _calibrate_frozen_bn(model, batches[0])
    if precision is None:
        trainer = SimpleTrainer(model, itertools.cycle(batches), opt)
    else:
        trainer = AMPTrainer(model, itertools.cycle(batches), opt, precision=precision)
    # The config's own schedule for these first iterations (its warmup), as a real run has it.
    schedule = instantiate(cfg.lr_multiplier)
    base_lrs = [g["lr"] for g in opt.param_groups]
    losses, times = [], []
    cuda = torch.device(cfg.train.device).type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with EventStorage() as storage:
        for i in range(warmup + iters):
            storage.iter = trainer.iter = i
            for g, lr in zip(opt.param_groups, base_lrs):
                g["lr"] = lr * schedule(i / cfg.train.max_iter)
            t = time.perf_counter()
            trainer.run_step()
            if arm == "pretrain":
                model.update_momentum(0.996)
            sync()
            if i >= warmup:
                times.append(time.perf_counter() - t)
            losses.append(storage.latest()["total_loss"][0])
            storage.step()
        # One more step, untimed, with every aten operator counted (benchmarks/step_ops.py
        # counts the CPU configs; this is the paper setting as it runs on the GPU, AMP casts
        # included).
        counter = OpCounter()
        storage.iter = trainer.iter = warmup + iters
        with counter:
            trainer.run_step()
            if arm == "pretrain":
                model.update_momentum(0.996)
        sync()
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else float("nan")
    del trainer, opt, model, batches
    if cuda:
        torch.cuda.empty_cache()
    return {
        "s_per_iter": statistics.median(times),
        "peak_gpu_mb": peak,
        # Means over one cycle of the pre-loaded batches, so that first and last see the same ones.
        "first_loss": statistics.mean(losses[:LOADED_BATCHES]),
        "last_loss": statistics.mean(losses[-LOADED_BATCHES:]),
        "finite": all(math.isfinite(x) for x in losses),
        "iters": iters,
        "aten_ops": counter.total(),
        "host_syncs": counter.total_syncs(),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--detectors", nargs="+", default=["faster_rcnn"], choices=list(DETECTORS))
    p.add_argument(
        "--data",
        default=str(REPO / ".gpu_check" / "coco256"),
        help="folder with images/ and annotations/{train,train_proposals}.json",
    )
    p.add_argument("--iters", type=int, default=30, help="timed iterations per arm")
    p.add_argument("--warmup", type=int, default=5, help="untimed iterations first")
    p.add_argument("--batch", type=int, default=2, help="images per step (the paper's per GPU)")
    p.add_argument(
        "--precision",
        default="float16",
        choices=["float16", "bfloat16", "none"],
        help="AMP autocast type; none: float32 with SimpleTrainer",
    )
    p.add_argument("--device", default="cuda")
    p.add_argument("--out", help="report path without suffix: also write <out>.md and <out>.json")
    args = p.parse_args(argv)

    import torch

    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_check: torch sees no GPU (torch.cuda.is_available() is False)")
    if args.precision != "none" and torch.device(args.device).type != "cuda":
        sys.exit("gpu_check: AMP needs a GPU (Detectron2's AMPTrainer); use --precision none")
    data = Path(args.data)
    needed = {"train.json"} | {PROPOSALS.get(d, "train_proposals.json") for d in args.detectors}
    for f in sorted(needed):
        if not (data / "annotations" / f).is_file():
            sys.exit(
                f"gpu_check: {data / 'annotations' / f} is missing: run "
                "scripts/gpu_check_prepare.sh where the registry is reachable"
            )
    precision = None if args.precision == "none" else getattr(torch, args.precision)
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else args.device
    printed = []

    def say(line: str) -> None:
        printed.append(line)
        print(line, flush=True)

    say(
        f"torch {torch.__version__}, {name}, AMP {args.precision}, "
        f"batch {args.batch}, {args.iters} timed iterations after {args.warmup}"
    )
    results = {}
    for det in args.detectors:
        cfgs = _configs(det, data, args.batch, args.device)
        results[det] = {}
        for arm, cfg in cfgs.items():
            t = time.perf_counter()
            r = _arm(cfg, arm, args.iters, args.warmup, precision)
            results[det][arm] = r
            say(
                f"{det:12s} {arm:18s} {r['s_per_iter']:.3f} s/iter  peak {r['peak_gpu_mb']:.0f} "
                f"MiB  loss {r['first_loss']:.3f} -> {r['last_loss']:.3f} "
                f"({'finite' if r['finite'] else 'NOT FINITE'})  {r['aten_ops']} aten ops, "
                f"{r['host_syncs']} host syncs  [{time.perf_counter() - t:.0f} s]"
            )
        pt, sv = results[det]["pretrain"], results[det]["supervised_frozen"]
        say(
            f"{det:12s} pre-training / supervised: "
            f"time x{pt['s_per_iter'] / sv['s_per_iter']:.2f}, "
            f"memory x{pt['peak_gpu_mb'] / sv['peak_gpu_mb']:.2f}, "
            f"aten ops x{pt['aten_ops'] / sv['aten_ops']:.2f}"
        )
    ok = all(r["finite"] for d in results.values() for r in d.values())
    say("gpu_check: OK" if ok else "gpu_check: a loss was not finite")
    if args.out:
        command = (
            f"bash scripts/gpu_check.sh --detectors {' '.join(args.detectors)} --iters {args.iters}"
            f" --warmup {args.warmup} --batch {args.batch} --precision {args.precision}"
        )
        Path(args.out + ".json").write_text(
            json.dumps(
                {
                    "command": command,
                    "device": name,
                    "torch": torch.__version__,
                    "results": results,
                },
                indent=2,
            )
        )
        Path(args.out + ".md").write_text(
            f"# GPU check ({args.precision})\n\nDate: {time.strftime('%Y-%m-%d')}. "
            f"Command: `{command}`\n\n```\n" + "\n".join(printed) + "\n```\n"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
