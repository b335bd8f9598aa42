"""Training and evaluation with LazyConfig, in the form of Detectron2's ``lazyconfig_train_net.py``.

``train_net.py`` at the top of the repository calls :func:`main`. Additions to Detectron2's script:

- runs on CPU when ``train.device`` asks for CUDA and there is none (with denormals flushed, without
  which CPU iterations slow down 3-10x as training proceeds); AMP only on GPU;
- a :class:`~aligndet_d2.modeling.MomentumPair` model gets the momentum hook and is never evaluated;
  its ``train.init_checkpoint`` (ImageNet backbone weights) is loaded into the online branch, which
  the hook copies into the momentum branch before the first step (loading it into the pair would
  match every ``.pkl`` key to both branches, an error in Detectron2's name matching);
- checks before anything is built: every ``key=value`` override names a key of the config and
  has its value's type (:func:`~aligndet_d2.engine.overrides.apply_checked_overrides`);
  ``train.output_dir`` can be a folder; every labelled COCO dataset of fine-tuning and evaluation
  is read whole, each image decoded and each box and class checked, against the model's
  ``num_classes``, and the evaluation datasets have the training dataset's classes in the same
  order (:func:`check_datasets`);
- checks before training: a proposals dataset cannot be fine-tuned on; DETR pre-training needs a
  json clustered into its classes with no more proposals per image than queries
  (:func:`~aligndet_d2.data.datasets.check_cluster_labels`); a labelled dataset used for
  pre-training gives a warning (its boxes are the proposals); an aligndet export that does not fit
  the model is an error listing the mismatched modules (Detectron2's loader only warns), and so is
  any other local ``.pth`` of which no tensor would load (a converted backbone under the wrong
  prefix, :func:`check_init_checkpoint`), and so is a checkpoint with residual adapters that the
  model lacks (Detectron2 would drop them); an ``adapters`` switch on a backbone without adapters,
  or in pre-training, is an error;
- every evaluation is written to ``<output_dir>/eval_results.json`` (the last one stays); a run
  resumed from a checkpoint whose evaluation was interrupted runs that evaluation first
  (:class:`~aligndet_d2.engine.hooks.ResumingEvalHook`).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, List, Optional, Tuple

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
from ..data.checks import check_coco_dataset, check_same_classes, class_names
from ..data.datasets import check_cluster_labels, is_proposals_dataset
from ..data.proposals import ProposalsError
from ..modeling.backbones.adapters import check_adapter_switches
from ..modeling.momentum import MomentumPair
from .hooks import MomentumUpdateHook, ResumingEvalHook, unwrap_model
from .overrides import apply_checked_overrides
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


def _is_detr_pretraining(cfg) -> bool:
    from ..modeling.detr import AlignDetDETR

    target = cfg.model.detector.get("_target_")
    return target is AlignDetDETR or (isinstance(target, str) and target.endswith("AlignDetDETR"))


def _dataset_names(loader_cfg) -> List[str]:
    """The dataset names of a loader node, registering those declared through ``L(register_*)``."""
    dataset = loader_cfg.get("dataset") if loader_cfg is not None else None
    names = dataset.get("names") if dataset is not None else None
    if names is None:
        return []
    names = instantiate(names)
    return [names] if isinstance(names, str) else list(names)


def _num_classes(model_cfg) -> Optional[Tuple[str, int]]:
    """The first ``num_classes`` of the model config that is a number, with its key."""
    from ..modeling.backbones.adapters import _lazy_nodes

    for where, node in _lazy_nodes(model_cfg, "model"):
        value = node.get("num_classes") if "num_classes" in node else None
        if isinstance(value, int) and not isinstance(value, bool):
            return f"{where}.num_classes", value
    return None


def _check_labelled(
    name: str, num_classes: Optional[Tuple[str, int]], decode: bool = True
) -> List[str]:
    """Checks one labelled dataset (its json and every image, :func:`check_coco_dataset`) and
    returns its class names in Detectron2's order."""
    from detectron2.data import MetadataCatalog

    meta = MetadataCatalog.get(name)
    json_file, image_root = meta.get("json_file", None), meta.get("image_root", None)
    if json_file is None or image_root is None:  # a VOC folder: read by its own loader
        return list(meta.get("thing_classes", []))
    key, n = num_classes if num_classes else ("num_classes", None)
    data = check_coco_dataset(
        json_file, image_root, num_classes=n, num_classes_key=key, decode=decode
    )
    return class_names(data)


def check_datasets(cfg, *, decode_train: bool = True) -> None:
    """Checks the datasets of ``cfg`` before the model is built.

    Pre-training: DETR needs a json clustered into its classes with no more proposals per image
    than queries; other pre-training data is checked by its loader. Fine-tuning and evaluation:
    no proposals dataset; every labelled COCO dataset is checked whole, json and images
    (:func:`~aligndet_d2.data.checks.check_coco_dataset`; the training images are decoded with
    ``decode_train``), with as many categories as the model's ``num_classes``, and the
    evaluation datasets have the training dataset's classes in the same order.

    Raises:
        ProposalsError: a proposals dataset given for fine-tuning, or DETR's clusters.
        DatasetError: listing every problem of a dataset, one line each naming the file.
    """
    if _is_pretraining(cfg):
        if _is_detr_pretraining(cfg):
            det, loader = cfg.model.detector, cfg.dataloader.train
            check_cluster_labels(
                loader.dataset.json_file,
                num_classes=det.num_classes,
                num_queries=det.num_queries,
                max_proposals=loader.mapper.get("max_proposals"),
            )
        return
    num_classes = _num_classes(cfg.model)
    train_names = _dataset_names(cfg.dataloader.get("train"))
    for name in train_names:
        if is_proposals_dataset(name):
            raise ProposalsError(
                f"dataset {name!r} is a proposals dataset (no labels): it is for pre-training; "
                "fine-tuning needs a labelled dataset"
            )
    classes = {name: _check_labelled(name, num_classes, decode_train) for name in train_names}
    reference = next(iter(classes.items()), None)
    for name in _dataset_names(cfg.dataloader.get("test")):
        if is_proposals_dataset(name):
            raise ProposalsError(f"dataset {name!r} is a proposals dataset: nothing to evaluate")
        names = _check_labelled(name, num_classes)
        if reference is not None and names:
            check_same_classes(reference, (name, names))


def check_output_dir(path: str) -> None:
    """Refuses a ``train.output_dir`` that cannot be a folder (it, or a folder above it, is a
    file), before anything is written."""
    here = os.path.abspath(path)
    while here and not os.path.exists(here):
        parent = os.path.dirname(here)
        if parent == here:
            return
        here = parent
    if not os.path.isdir(here):
        raise NotADirectoryError(
            f"train.output_dir={path}: {here} is a file, so the output folder cannot be made there"
        )


def check_init_checkpoint(model: torch.nn.Module, path: str) -> Optional[str]:
    """Checks ``train.init_checkpoint`` against the model before it is loaded.

    Only a local ``.pth`` is read: Detectron2 matches a ``.pkl`` into the model by name suffix
    (``matching_heuristics``), a URL (``detectron2://...``) is fetched by its path manager, and an
    empty path loads nothing. Of a ``.pth``:

    - an aligndet export (it carries :data:`~aligndet_d2.checkpoint.export.EXPORT_MARKER`) gets its
      per-module key report, whose mismatches are an error;
    - a pre-training checkpoint given to a plain detector is an error (export it first);
    - any other ``.pth`` without ``matching_heuristics`` is an error when not one of its tensors
      would load (a key of the model with the same shape), where Detectron2's loader only warns
      and leaves the model at its random init. One tensor is enough: taking part of another
      model's checkpoint (its backbone) is a legitimate transfer, while a wrong prefix (a
      converted backbone's ``backbone.bottom_up.`` in DETR, whose ResNet is ``backbone``) misses
      every key. A backbone written by ``tools/convert_backbone.py`` must moreover load whole and
      fill the model's ResNet under its prefix (no other prefix, no other depth).

    A :class:`~aligndet_d2.modeling.MomentumPair` is checked as :func:`load_init_checkpoint` loads
    it: a pre-training checkpoint against the pair, other weights against its online branch.

    Args:
        model: the model, possibly inside DistributedDataParallel.
        path: ``train.init_checkpoint``.

    Returns:
        An export's key table, or None.

    Raises:
        ExportMismatchError: an export, listing the modules that do not fit.
        ValueError: a pre-training checkpoint given to a plain detector, or a ``.pth`` of which
            nothing would load (naming the file, some of its keys and the model's, and the likely
            fix), or a converted backbone that does not fill the model's ResNet.
    """
    return _check_init(unwrap_model(model), path, _local_checkpoint(path))


def _local_checkpoint(path: str) -> Optional[Dict[str, Any]]:
    """``path`` loaded when it is a local ``.pth`` (the files the checks read), else None."""
    if not path or not path.endswith(".pth") or not os.path.isfile(path):
        return None
    return load_checkpoint_file(path)


def _check_init(model: torch.nn.Module, path: str, ckpt: Optional[Dict[str, Any]]) -> Optional[str]:
    """:func:`check_init_checkpoint` of an unwrapped model and the loaded file (None: not read)."""
    if ckpt is None:
        return None
    state = ckpt["model"]
    pretraining = _is_pretraining_checkpoint(ckpt)
    if isinstance(model, MomentumPair):
        if pretraining:
            _check_keys_load(model, path, ckpt, "the model")
        else:
            _check_keys_load(model.online, path, ckpt, "the model's online branch")
        return None
    if pretraining:
        raise ValueError(
            f"{path} is a pre-training checkpoint: export it with tools/export.py and fine-tune "
            "from the exported file"
        )
    if EXPORT_MARKER not in ckpt:
        _check_keys_load(model, path, ckpt, "the model")
        return None
    report = key_report(state, model.state_dict(), ckpt[EXPORT_MARKER].get("dropped", ()))
    table = format_report(report)
    check_report(report)
    return table


def _check_keys_load(module: torch.nn.Module, path: str, ckpt: Dict[str, Any], where: str) -> None:
    """Raises ValueError when Detectron2 would load none of a plain checkpoint's tensors into
    ``module``, or a converted backbone not whole (see :func:`check_init_checkpoint`)."""
    from ..checkpoint.convert import CONVERTED_AUTHOR

    if ckpt.get("matching_heuristics"):  # Detectron2 matches these by suffix, as a .pkl
        return
    state = ckpt["model"]
    # fvcore strips a DataParallel prefix that every key has before matching names.
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    own = module.state_dict()
    loads = {
        k
        for k, v in state.items()
        if k in own and hasattr(v, "shape") and tuple(v.shape) == tuple(own[k].shape)
    }
    converted = str(ckpt.get("__author__", "")).startswith(CONVERTED_AUTHOR)
    if state and not loads:
        raise ValueError(_nothing_loads_message(path, state, own, where, converted))
    from ..modeling.backbones.adapters import is_adapter_key

    adapters = [k for k in state if is_adapter_key(k) and k not in own]
    if adapters:
        # Detectron2 would drop them with a warning and score the plain frozen backbone.
        raise ValueError(
            f"train.init_checkpoint={path}: {len(adapters)} of its tensors are residual "
            f"adapters (first: {adapters[0]}) that {where} does not have: it was trained with "
            "adapters; set model.backbone.bottom_up.adapters=parallel (or series, as in the "
            "config.yaml of its run)"
        )
    if converted:
        _check_whole_resnet(path, ckpt, state, own, loads, where)


def _nothing_loads_message(
    path: str, state: Dict[str, Any], own: Dict[str, Any], where: str, converted: bool
) -> str:
    """The error of a checkpoint none of whose keys ``where`` has: samples of both key sets, the
    prefix change that would match them, and the converter's fix."""
    theirs = list(state)[:3]
    ours = list(own)[:3]
    swap = _prefix_swap(state, own)
    if swap:  # the model's keys that the file's first ones were probably meant to be
        old, new, n = swap
        ours = [new + k[len(old) :] for k in theirs if new + k[len(old) :] in own] or ours
    lines = [
        f"train.init_checkpoint={path}: none of its {len(state)} tensors would load into {where} "
        "(no key of the same name and shape): Detectron2 would only warn and train from random "
        "init.",
        "  keys in the file: " + ", ".join(theirs) + ", ...",
        f"  keys in {where}: " + ", ".join(ours) + ", ...",
    ]
    if swap:
        lines.append(f"  with the prefix {new!r} in place of {old!r}, {n} of its keys would match.")
    fix = (
        "It is a backbone from tools/convert_backbone.py"
        if converted
        else "Another model's checkpoint? For a backbone from tools/convert_backbone.py"
    )
    lines.append(
        f"{fix}: a .pth's keys must carry the prefix of the model's ResNet: convert it again "
        "with --prefix backbone. (--detector detr) for DETR, --prefix backbone.bottom_up. for the "
        "FPN detectors (R-CNN, RetinaNet, FCOS), or write a .pkl, which Detectron2 matches by "
        "suffix into any of them."
    )
    return "\n".join(lines)


def _prefix_swap(state: Dict[str, Any], own: Dict[str, Any]) -> Optional[tuple]:
    """(file prefix, model prefix, keys matched) of the prefix change under which most of the
    file's keys would be the model's, or None when none would."""
    first = next(iter(state)).split(".")
    best = None
    # Tails of two names at least: a single "weight" would pair any prefix with any other.
    for i in range(len(first) - 1):
        old, tail = ".".join(first[:i]) + ("." if i else ""), ".".join(first[i:])
        news = {k[: -len(tail)] for k in own if k == tail or k.endswith("." + tail)}
        for new in sorted(news)[:20]:
            n = sum(1 for k in state if k.startswith(old) and new + k[len(old) :] in own)
            if n and (best is None or n > best[2]):
                best = (old, new, n)
    return best


def _check_whole_resnet(
    path: str,
    ckpt: Dict[str, Any],
    state: Dict[str, Any],
    own: Dict[str, Any],
    loads: set,
    where: str,
) -> None:
    """A converted backbone holds one ResNet: all of it loads, and it fills the model's ResNet
    under its prefix (residual adapters aside, which start from zero)."""
    from ..checkpoint.convert import CONVERTED_AUTHOR
    from ..modeling.backbones.adapters import is_adapter_key

    stem = next((k for k in state if k.endswith("stem.conv1.weight")), "stem.conv1.weight")
    prefix = stem[: -len("stem.conv1.weight")]
    unused = [k for k in state if k not in loads]
    missing = [
        k
        for k in own
        if k.startswith(prefix)
        and k not in state
        and not is_adapter_key(k)
        and not k.endswith("num_batches_tracked")
    ]
    if not unused and not missing:
        return
    problems = []
    if unused:
        problems.append(
            f"{len(unused)} of its keys are not in {where} or have another shape (first: "
            f"{unused[0]})"
        )
    if missing:
        problems.append(f"{len(missing)} of {where}'s keys are not in it (first: {missing[0]})")
    raise ValueError(
        f"train.init_checkpoint={path}: a backbone from tools/convert_backbone.py "
        f"{ckpt['__author__'][len(CONVERTED_AUTHOR):].strip()} that does not fill the ResNet "
        f"under {prefix!r}: "
        + "; ".join(problems)
        + ". A ResNet of another depth than the config's? Give the config the depth override "
        "the tool prints (...stages.depth), or convert the ResNet the config builds."
    )


def load_init_checkpoint(model: torch.nn.Module, path: str) -> None:
    """Checks and loads ``train.init_checkpoint`` (not a resume) as Detectron2 does, into the
    right module.

    The file is checked first (:func:`check_init_checkpoint`), also where ``build_trainer`` did not
    (``--resume`` without a checkpoint to resume from).

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

    Raises:
        ValueError, ExportMismatchError: as :func:`check_init_checkpoint`.
    """
    target = unwrap_model(model)
    ckpt = _local_checkpoint(path)
    _check_init(target, path, ckpt)
    if isinstance(target, MomentumPair) and not _is_pretraining_checkpoint(ckpt):
        DetectionCheckpointer(target.online).load(path, checkpointables=[])
    else:
        DetectionCheckpointer(model).load(path, checkpointables=[])


def _is_pretraining_checkpoint(ckpt: Optional[Dict[str, Any]]) -> bool:
    """Whether a loaded checkpoint (None: not a local ``.pth``) holds both branches of a pair."""
    if ckpt is None:
        return False
    return any(k.startswith(("online.", "momentum.")) for k in ckpt["model"])


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
    cfg = apply_checked_overrides(cfg, args.opts)
    check_output_dir(cfg.train.output_dir)
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
        if not _is_pretraining(cfg):
            check_datasets(cfg, decode_train=False)
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
