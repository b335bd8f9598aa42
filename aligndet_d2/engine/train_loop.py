"""Training and evaluation with LazyConfig, in the form of Detectron2's ``lazyconfig_train_net.py``.

``train_net.py`` at the top of the repository calls :func:`main`. Additions to Detectron2's script:

- runs on CPU when ``train.device`` asks for CUDA and there is none (with denormals flushed, without
  which CPU iterations slow down 3-10x as training proceeds); AMP only on GPU;
- a :class:`~aligndet_d2.modeling.MomentumPair` model gets the momentum hook and is never evaluated;
  its ``train.init_checkpoint`` (ImageNet backbone weights) is loaded into the online branch, which
  the hook copies into the momentum branch before the first step (loading it into the pair would
  match every ``.pkl`` key to both branches, an error in Detectron2's name matching);
- checks before training: a proposals dataset cannot be fine-tuned on; a labelled dataset used for
  pre-training gives a warning (its boxes are the proposals); an aligndet export that does not fit
  the model is an error listing the mismatched modules (Detectron2's loader only warns); an
  ``adapters`` switch on a backbone without adapters, or in pre-training, is an error;
- every evaluation is written to ``<output_dir>/eval_results.json`` (the last one stays); a run
  resumed from a checkpoint whose evaluation was interrupted runs that evaluation first
  (:class:`~aligndet_d2.engine.hooks.ResumingEvalHook`).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, Optional

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import LazyConfig, instantiate
from detectron2.engine import (
    AMPTrainer,
    SimpleTrainer,
    default_argument_parser,
    default_setup,
    default_writers,
    hooks,
    launch,
)
from detectron2.engine.defaults import create_ddp_model
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..checkpoint.export import (
    EXPORT_MARKER,
    check_report,
    format_report,
    key_report,
    load_checkpoint_file,
)
from ..data.datasets import is_proposals_dataset
from ..data.proposals import ProposalsError
from ..modeling.backbones.adapters import check_adapter_switches
from ..modeling.momentum import MomentumPair
from .hooks import MomentumUpdateHook, ResumingEvalHook, unwrap_model
from .scaling import scale_to_batch

__all__ = [
    "build_trainer",
    "do_train",
    "do_test",
    "load_init_checkpoint",
    "main",
    "run",
    "resolve_device",
]

logger = logging.getLogger("detectron2")


def resolve_device(cfg) -> str:
    """``cfg.train.device``, or "cpu" with a warning when it asks for CUDA and there is none.

    On CPU, denormal floats are flushed to zero.
    """
    device = str(cfg.train.get("device", "cuda"))
    if device.startswith("cuda") and not torch.cuda.is_available():
        logger.warning(f"train.device={device} but CUDA is not available: running on the CPU")
        device = "cpu"
    cfg.train.device = device
    if device == "cpu":
        torch.set_flush_denormal(True)
    return device


def _is_pretraining(cfg) -> bool:
    target = cfg.model.get("_target_")
    return (
        isinstance(target, type)
        and issubclass(target, MomentumPair)
        or (isinstance(target, str) and target.endswith("MomentumPair"))
    )


def _ddp(model, cfg, device: str):
    # Detectron2 passes device_ids=[local rank], which DistributedDataParallel refuses for a CPU
    # module: multi-process training on CPUs (gloo) needs device_ids=None.
    kwargs = dict(cfg.train.ddp)
    if device == "cpu":
        kwargs["device_ids"] = None
    return create_ddp_model(model, **kwargs)


def check_datasets(cfg) -> None:
    """Refuses fine-tuning on a proposals dataset; pre-training data is checked by its loader."""
    if _is_pretraining(cfg):
        return
    dataset = cfg.dataloader.train.get("dataset")
    names = dataset.get("names") if dataset is not None else None
    if names is None:
        return
    names = instantiate(names)  # registers datasets declared through L(register_coco)
    for name in [names] if isinstance(names, str) else names:
        if is_proposals_dataset(name):
            raise ProposalsError(
                f"dataset {name!r} is a proposals dataset (no labels): it is for pre-training; "
                "fine-tuning needs a labelled dataset"
            )


def check_init_checkpoint(model: torch.nn.Module, path: str) -> Optional[str]:
    """Checks an aligndet export against the model before loading it; returns the key table.

    Raises:
        ExportMismatchError: listing the modules that do not fit.
        ValueError: for a pre-training checkpoint given to a plain detector (export it first).
    """
    if isinstance(model, MomentumPair):  # see load_init_checkpoint
        return None
    if not path or not path.endswith(".pth") or not os.path.isfile(path):
        return None
    ckpt = load_checkpoint_file(path)
    state = ckpt["model"]
    if any(k.startswith(("online.", "momentum.")) for k in state):
        raise ValueError(
            f"{path} is a pre-training checkpoint: export it with tools/export.py and fine-tune "
            "from the exported file"
        )
    if EXPORT_MARKER not in ckpt:
        return None
    report = key_report(state, model.state_dict(), ckpt[EXPORT_MARKER].get("dropped", ()))
    table = format_report(report)
    check_report(report)
    return table


def load_init_checkpoint(model: torch.nn.Module, path: str) -> None:
    """Loads ``train.init_checkpoint`` (not a resume) as Detectron2 does, into the right module.

    A :class:`~aligndet_d2.modeling.MomentumPair` takes its initial weights in the online branch
    only: Detectron2 matches the names of a ``.pkl`` (MSRA / Caffe2 or converted torchvision
    weights, ``matching_heuristics``) by suffix, and ``res2.0.conv1.weight`` is a suffix of both
    ``online.backbone.bottom_up.res2.0.conv1.weight`` and its ``momentum.`` twin, which Detectron2
    refuses. :class:`~aligndet_d2.engine.hooks.MomentumUpdateHook` then copies the online branch
    into the momentum one before the first step. A pre-training checkpoint (``online.*`` and
    ``momentum.*`` keys) given as init weights is loaded whole.

    Args:
        model: the model, possibly inside DistributedDataParallel.
        path: a local path or a Detectron2 URL (``detectron2://...``); empty: nothing is loaded.
    """
    target = unwrap_model(model)
    if isinstance(target, MomentumPair) and not _is_pretraining_checkpoint(path):
        DetectionCheckpointer(target.online).load(path, checkpointables=[])
    else:
        DetectionCheckpointer(model).load(path, checkpointables=[])


def _is_pretraining_checkpoint(path: str) -> bool:
    if not path or not path.endswith(".pth") or not os.path.isfile(path):
        return False
    state = load_checkpoint_file(path)["model"]
    return any(k.startswith(("online.", "momentum.")) for k in state)


def do_test(cfg, model) -> Dict[str, Any]:
    """Evaluates ``model`` with ``cfg.dataloader.test`` and ``cfg.dataloader.evaluator``."""
    if "evaluator" not in cfg.dataloader:
        return {}
    model = unwrap_model(model)
    if isinstance(model, MomentumPair):
        return {}
    results = inference_on_dataset(
        model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator)
    )
    if comm.is_main_process():
        print_csv_format(results)
        os.makedirs(cfg.train.output_dir, exist_ok=True)
        with open(os.path.join(cfg.train.output_dir, "eval_results.json"), "w") as f:
            json.dump(results, f, indent=1)
    return results


def build_trainer(args, cfg):
    """Builds the model, optimizer, loader, trainer and hooks from ``cfg`` and loads the weights.

    Returns:
        (trainer, checkpointer, start_iter): ``start_iter`` is 0, or the iteration after the one
        saved in the last checkpoint with ``args.resume``.
    """
    device = resolve_device(cfg)
    check_datasets(cfg)
    check_adapter_switches(cfg.model, pretraining=_is_pretraining(cfg))
    model = instantiate(cfg.model)
    logger.info("Model:\n{}".format(model))
    model.to(device)
    pretraining = isinstance(model, MomentumPair)
    if not args.resume:
        table = check_init_checkpoint(model, cfg.train.init_checkpoint)
        if table:
            logger.info(f"weights from {cfg.train.init_checkpoint}:\n{table}")

    cfg.optimizer.params.model = model
    optim = instantiate(cfg.optimizer)
    train_loader = instantiate(cfg.dataloader.train)
    model = _ddp(model, cfg, device)
    use_amp = bool(cfg.train.amp.enabled)
    if use_amp and device == "cpu":
        logger.warning("train.amp.enabled=True needs a GPU: training in float32 on the CPU")
        use_amp = False
    trainer = (AMPTrainer if use_amp else SimpleTrainer)(model, train_loader, optim)
    checkpointer = DetectionCheckpointer(model, cfg.train.output_dir, trainer=trainer)
    trainer.register_hooks(
        [
            hooks.IterationTimer(),
            MomentumUpdateHook(unwrap_model(model).base_momentum) if pretraining else None,
            hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
            (
                hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer)
                if comm.is_main_process()
                else None
            ),
            (
                None
                if pretraining
                else ResumingEvalHook(
                    cfg.train.eval_period, lambda: do_test(cfg, model), cfg.train.output_dir
                )
            ),
            (
                hooks.PeriodicWriter(
                    default_writers(cfg.train.output_dir, cfg.train.max_iter),
                    period=cfg.train.log_period,
                )
                if comm.is_main_process()
                else None
            ),
        ]
    )
    if args.resume and checkpointer.has_checkpoint():
        checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=True)
        # The checkpoint holds the iteration that was last run.
        start_iter = trainer.iter + 1
    else:
        # A fresh run, or --resume with nothing to resume from: the initial weights.
        load_init_checkpoint(model, cfg.train.init_checkpoint)
        start_iter = 0
    return trainer, checkpointer, start_iter


def do_train(args, cfg) -> None:
    """Trains as ``cfg`` says, from scratch, from ``train.init_checkpoint`` or resumed."""
    trainer, _, start_iter = build_trainer(args, cfg)
    trainer.train(start_iter, cfg.train.max_iter)


def main(args) -> Optional[Dict[str, Any]]:
    cfg = LazyConfig.load(args.config_file)
    cfg = LazyConfig.apply_overrides(cfg, args.opts)
    # Before default_setup, which saves the config the run uses to its output folder.
    scaling = None if args.eval_only else scale_to_batch(cfg)
    default_setup(cfg, args)
    # default_setup sets up Detectron2's and fvcore's loggers; this package logs under its own name.
    setup_logger(cfg.train.output_dir, distributed_rank=comm.get_rank(), name="aligndet_d2")
    if scaling:
        (logger.info if cfg.train.get("auto_scale") else logger.warning)(scaling)
    if args.eval_only:
        device = resolve_device(cfg)
        check_adapter_switches(cfg.model, pretraining=_is_pretraining(cfg))
        model = instantiate(cfg.model)
        if isinstance(model, MomentumPair):
            raise ValueError(
                "--eval-only on a pre-training config: export the checkpoint with tools/export.py "
                "and evaluate it with a fine-tune config"
            )
        model.to(device)
        check_init_checkpoint(model, cfg.train.init_checkpoint)
        model = _ddp(model, cfg, device)
        DetectionCheckpointer(model).load(cfg.train.init_checkpoint)
        return do_test(cfg, model)
    do_train(args, cfg)
    return None


def run(argv=None) -> None:
    """Parses Detectron2's standard flags and launches :func:`main` on every process."""
    parser = default_argument_parser(
        epilog="Examples:\n"
        "  python train_net.py --config-file configs/pretrain_box_faster_rcnn_cpu.py\n"
        "  python train_net.py --config-file configs/finetune_faster_rcnn_cpu.py "
        "train.init_checkpoint=output/aligndet_faster_rcnn_cpu.pth\n"
    )
    args = parser.parse_args(argv)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
