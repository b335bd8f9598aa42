"""The own-data recipe: a folder of images and a few labels in, a pre-trained and fine-tuned
detector, its AP and pictures of its detections out (``tools/recipe.py``).

Stages, each skipped when its output exists so that a second call continues where the first
stopped (a stopped training resumes from its last checkpoint):

0. check every image of the pool and every box and class of the labels (one table of problems,
   before any training); convert VOC / YOLO labels; hold out val images when no val json is given;
1. selective-search proposals of the pool (every image of ``--images`` except the val images:
   evaluation images are never trained on, not even without labels);
2. AlignDet pre-training on them, 1 epoch of the pool (at least 200 iterations);
3. export;
4. the fine-tune lr, chosen per arm on a held-out share of the labeled train images (never on
   val) among multiples of the config's: each candidate fine-tunes on the rest, is scored on the
   held-out images at 1/3, 2/3 and all of the schedule, and the best AP50 picks the lr and the
   length;
5. fine-tuning on all labeled train images with the chosen lr and length, from the export (and
   with ``baseline`` from scratch), evaluated on val: COCO AP, class-agnostic AP, AP by class
   frequency;
6. ``report.md``: the AP table, AP against iterations (``ap.png``), AP by class frequency,
   detections drawn on val images, the proposals' recall of the labeled boxes per class.

The recommended recipe (the README's best row): the backbone frozen with parallel residual
adapters, where the detector has a frozen config; its CPU-sized configs, on ``cfg.train.device``
(a GPU when there is one).
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence, Tuple

from ..data.checks import (
    DatasetError,
    Problem,
    check_image,
    check_same_classes,
    class_names,
    coco_dataset_problems,
    format_problems,
    list_image_files,
)
from .detectors import get_detector
from .logs import eval_points
from .runner import run_train_net
from .stages import export_once, proposals_once

__all__ = [
    "LR_FACTORS",
    "RecipeSettings",
    "choose",
    "finetune_schedule",
    "pretrain_schedule",
    "run_recipe",
]

BATCH = 2  # the CPU-sized configs' images per batch
LR_FACTORS = (1.0, 2.5, 5.0)  # multiples of the fine-tune config's lr tried on the held-out share
FINETUNE_EPOCHS = 12  # the CPU VOC configs' schedule: 12 epochs of the labeled images
MIN_PRETRAIN_ITERS = 200
HOLDOUT_SHARE = 0.25  # of the labeled train images, for the lr choice
VAL_SHARE = 0.2  # of the labeled images, as val when no val json is given
FRACTIONS = (1 / 3, 2 / 3, 1.0)  # where each candidate is scored
LOW_RECALL = 50.0  # % of a class's boxes that selective search should cover at IoU 0.5


@dataclass
class RecipeSettings:
    """What a recipe run does (``tools/recipe.py``'s arguments).

    Attributes:
        images: the pool: every image, labeled or not.
        output: the output folder.
        train_json: COCO json of the labeled images (or ``labels`` + ``label_format``).
        labels, label_format, classes: VOC XML / YOLO txt labels to convert, and class names.
        val_json: COCO json of the val images; "" holds out :data:`VAL_SHARE` of the labeled.
        detector: a row of the detector table.
        baseline: also fine-tune from scratch.
        pretrain_iters, finetune_iters: 0: from the pool and the labeled set.
        lr: the fine-tune lr; 0 chooses it among ``lr_factors`` x the config's.
        lr_factors: the candidates; one factor skips the choice.
        device: "auto", "cpu" or "cuda".
        workers: proposal processes.
        proposal_mode: selective search's mode (soco, fast, quality).
        proposal_min_size: the proposal filter's smallest box side in pixels.
        seed: of the held-out shares and every training.
        pictures: val images drawn with their detections.
        finetune_opts: ``key=value`` overrides of every fine-tune (after the recipe's own).
    """

    images: str
    output: str
    train_json: str = ""
    labels: str = ""
    label_format: str = ""
    classes: str = ""
    val_json: str = ""
    detector: str = "faster_rcnn"
    baseline: bool = False
    pretrain_iters: int = 0
    finetune_iters: int = 0
    lr: float = 0.0
    lr_factors: Tuple[float, ...] = LR_FACTORS
    device: str = "auto"
    workers: int = 2
    proposal_mode: str = "soco"
    proposal_min_size: float = 32.0
    seed: int = 0
    pictures: int = 4
    finetune_opts: Tuple[str, ...] = field(default_factory=tuple)


def pretrain_schedule(pool: int) -> int:
    """Pre-training iterations for a pool of ``pool`` images: 1 epoch at 2 images per batch (the
    README's frozen + adapters row: 2501 VOC images, 1250 iterations), at least 200."""
    return max(MIN_PRETRAIN_ITERS, round(pool / BATCH))


def finetune_schedule(labeled: int) -> int:
    """Fine-tune iterations for ``labeled`` images: 12 epochs at 2 images per batch (the CPU VOC
    configs: 250 images of a 10 % split, 1500 iterations)."""
    return max(3, math.ceil(labeled * FINETUNE_EPOCHS / BATCH))


def choose(candidates: Dict[float, Dict[float, float]]) -> Tuple[float, float, float]:
    """The lr and the schedule fraction of the best held-out AP50.

    Args:
        candidates: {lr: {fraction of the schedule: held-out AP50}}, in the order tried (the
            config's lr first); a candidate whose model detected nothing has no points.

    Returns:
        ``(lr, fraction, AP50)``; ties go to the lr tried first, then the longer schedule. When
        no candidate was scored (no detections on the held-out images), the first lr and the
        whole schedule, with AP50 NaN.
    """
    best = None
    for lr, points in candidates.items():
        for frac in sorted(points, reverse=True):
            ap = points[frac]
            if ap == ap and (best is None or ap > best[2]):  # NaN never wins
                best = (lr, frac, ap)
    if best is None:
        return next(iter(candidates)), 1.0, float("nan")
    return best


class _Log:
    """Stage lines and the wall time of each stage."""

    def __init__(self):
        self.seconds: Dict[str, float] = {}
        self.t0 = time.time()

    def stage(self, n: int, text: str) -> None:
        print(f"\n[recipe {n}/6] {text}", flush=True)

    def timed(self, name: str, fn: Callable[[], Any]) -> Any:
        t = time.time()
        out = fn()
        self.seconds[name] = self.seconds.get(name, 0.0) + time.time() - t
        return out


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _subset(data: Dict[str, Any], image_ids: Sequence[Any]) -> Dict[str, Any]:
    keep = set(image_ids)
    return {
        **{k: v for k, v in data.items() if k not in ("images", "annotations")},
        "images": [im for im in data["images"] if im["id"] in keep],
        "annotations": [a for a in data["annotations"] if a["image_id"] in keep],
    }


def _split(data: Dict[str, Any], share: float, seed: int) -> Tuple[Dict, Dict]:
    """(rest, held out): ``share`` of the images (at least 1, leaving at least 1), by seed."""
    ids = sorted(im["id"] for im in data["images"])
    if len(ids) < 2:
        raise DatasetError(f"{len(ids)} labeled image(s): at least 2 are needed to hold one out")
    n = min(len(ids) - 1, max(1, round(len(ids) * share)))
    held = random.Random(seed).sample(ids, n)
    rest = [i for i in ids if i not in set(held)]
    return _subset(data, rest), _subset(data, held)


class Recipe:
    """One recipe run (:func:`run_recipe`)."""

    def __init__(self, s: RecipeSettings):
        self.s = s
        self.out = Path(s.output).resolve()
        self.images = str(Path(s.images).resolve())
        self.det = get_detector(s.detector)
        variants = self.det.variants("finetune", "cpu")
        self.variant = "frozen" if "frozen" in variants else ""
        self.finetune_config = self.det.config("finetune", "cpu", self.variant)
        self.pretrain_config = self.det.config("pretrain", "cpu")
        self.log = _Log()
        self.pretrain_overrides: List[str] = []
        self.state_file = self.out / "recipe.json"
        self.state: Dict[str, Any] = (
            json.loads(self.state_file.read_text()) if self.state_file.exists() else {}
        )

    def save(self) -> None:
        _write_json(self.state_file, self.state)

    # -- stage 0 ---------------------------------------------------------------------------
    def check_inputs(self) -> None:
        """Every image of the pool decodes; the labels are checked and split. All problems are
        reported at once, before anything trains."""
        from ..data.importers import format_changes, import_labels, read_class_names

        s, data_dir = self.s, self.out / "data"
        problems: List[Problem] = []
        files = list_image_files(self.images)
        for rel in files:
            _, problem = check_image(os.path.join(self.images, rel))
            if problem:
                problems.append(Problem(os.path.join(self.images, rel), problem))
        train_json = s.train_json
        if not train_json:
            if not (s.labels and s.label_format):
                raise DatasetError("give the labels: --train-json, or --labels and --label-format")
            classes = read_class_names(s.classes) if s.classes else None
            coco, changes = import_labels(s.labels, self.images, s.label_format, classes)
            # The pool's images are all in the converted json; the labeled are those with boxes.
            labeled = {a["image_id"] for a in coco["annotations"]}
            coco = _subset(coco, sorted(labeled))
            train_json = str(data_dir / "labels.json")
            _write_json(Path(train_json), coco)
            print(f"  {s.labels} ({s.label_format}) -> {train_json}:")
            print("  " + format_changes(changes).replace("\n", "\n  "))
        datasets = {}
        for name, path in (("train", train_json), ("val", s.val_json)):
            if path:
                datasets[name], found = coco_dataset_problems(path, self.images)
                problems += [p for p in found if p not in problems]  # a pool image once
        if problems:
            raise DatasetError(format_problems(problems, f"recipe inputs ({self.images})"))
        train = datasets["train"]
        if not train["annotations"]:
            raise DatasetError(f"{train_json}: no boxes: nothing to fine-tune on")
        if "val" in datasets:
            check_same_classes(
                (train_json, class_names(train)), (s.val_json, class_names(datasets["val"]))
            )
            val, val_json = datasets["val"], s.val_json
        else:
            train, val = _split(train, VAL_SHARE, s.seed)
            val_json = str(data_dir / "val.json")
            _write_json(Path(val_json), val)
        train_path = data_dir / "train.json"
        _write_json(train_path, train)
        val_files = {im["file_name"] for im in val["images"]}
        pool = [f for f in files if f not in val_files]
        _write_json(
            data_dir / "pool.json",
            {
                "images": [{"id": i + 1, "file_name": f} for i, f in enumerate(pool)],
                "annotations": [],
                "categories": [],
            },
        )
        self.state["data"] = {
            "train_json": str(train_path),
            "val_json": val_json,
            "pool_json": str(data_dir / "pool.json"),
            "pool": len(pool),
            "train": len(train["images"]),
            "val": len(val["images"]),
            "classes": class_names(train),
            "val_given": bool(s.val_json),
        }
        print(
            f"  {len(files)} images, all readable; pool {len(pool)} (the val images left out), "
            f"{len(train['images'])} labeled train images ({len(train['annotations'])} boxes, "
            f"{len(self.state['data']['classes'])} classes), {len(val['images'])} val images"
            + ("" if s.val_json else f" held out of the labeled ({VAL_SHARE:.0%}, seed {s.seed})")
        )
        self.save()

    # -- training --------------------------------------------------------------------------
    def _device(self) -> List[str]:
        if self.s.device == "auto":
            return []  # the configs' train.device (cuda), the CPU when there is none
        return [f"train.device={self.s.device}"]

    def _train(self, name: str, args: List[str], out_dir: Path, max_iter: int) -> None:
        """One train_net.py run into ``out_dir``, resumed when interrupted, skipped when done."""
        done = (out_dir / "model_final.pth").exists() and (
            name == "pretrain" or (out_dir / "eval_results.json").exists()
        )
        if done:
            print(f"  {out_dir.relative_to(self.out)}: done before, kept")
            return
        resume = ["--resume"] if (out_dir / "last_checkpoint").exists() else []
        self.log.timed(
            name,
            lambda: run_train_net(
                [
                    *resume,
                    *args,
                    *self._device(),
                    f"train.output_dir={out_dir}",
                    f"train.max_iter={max_iter}",
                    f"train.checkpointer.period={max(1, max_iter // 3)}",
                    "train.checkpointer.max_to_keep=1",
                    f"train.seed={self.s.seed}",
                ],
                out_dir / "train_net.log",
                append=True,
                name="recipe",
                progress=max_iter,
            ),
        )

    def pretrain(self) -> Path:
        d = self.state["data"]
        props = self.out / "proposals" / "pool.json"
        self.log.stage(1, f"selective-search proposals of the pool ({d['pool']} images)")
        self.log.timed(
            "proposals",
            lambda: proposals_once(
                self.images,
                props,
                coco_json=d["pool_json"],
                mode=self.s.proposal_mode,
                min_size=self.s.proposal_min_size,
                workers=self.s.workers,
                progress=True,
            ),
        )
        if self.det.needs_clusters:
            props = self._clusters(props)
        iters = self.s.pretrain_iters or pretrain_schedule(d["pool"])
        self.state["pretrain_iters"] = iters
        self.log.stage(
            2,
            f"AlignDet pre-training of {self.det.name} on them without labels ({iters} "
            f"iterations, {self.pretrain_config})",
        )
        out_dir = self.out / "pretrain"
        self._train(
            "pretrain",
            [
                "--config-file",
                self.pretrain_config,
                f"dataloader.train.dataset.json_file={props}",
                f"dataloader.train.dataset.image_root={self.images}",
                *self.pretrain_overrides,
            ],
            out_dir,
            iters,
        )
        self.log.stage(3, "export of the online detector for fine-tuning")
        return self.log.timed("export", lambda: export_once(out_dir))

    def _clusters(self, props: Path) -> Path:
        """DETR's classes: the proposals clustered into its pre-training config's classes."""
        from detectron2.config import LazyConfig

        from ..data.clusters import ClusterSettings, cluster_proposals

        out = props.with_name("pool_clustered.json")
        # As many clusters as the config's classes, unless there are fewer proposals to cluster:
        # then as many as proposals, with the classes set to match (pretrain_overrides).
        k = int(LazyConfig.load(self.pretrain_config).model.detector.num_classes)
        n = len(json.loads(props.read_text())["annotations"])
        if n < k:
            k = max(2, n)
            self.pretrain_overrides = [f"model.detector.num_classes={k}"]
        if not out.exists():
            settings = ClusterSettings(num_clusters=k, **self.det.cluster_settings)
            print(f"  clustering the proposals into {k} pseudo-classes")
            self.log.timed(
                "clusters",
                lambda: cluster_proposals(
                    str(props),
                    self.images,
                    self.pretrain_config,
                    str(out),
                    settings,
                    cache_dir=f"{out}.features",
                ),
            )
        return out

    def _finetune_args(self, train_json: str, val_json: str, init: str, lr: float) -> List[str]:
        n = len(self.state["data"]["classes"])
        args = ["--config-file", self.finetune_config]
        for split, path in (("train", train_json), ("test", val_json)):
            node = f"dataloader.{split}.dataset.names"
            args += [
                f"{node}.name=recipe_{split}",
                f"{node}.json_file={path}",
                f"{node}.image_root={self.images}",
            ]
        args += [f"{key}={n}" for key in self.det.num_classes_keys]
        if self.variant == "frozen":
            args.append("model.backbone.bottom_up.adapters=parallel")
        args += [f"train.init_checkpoint={init}", f"optimizer.lr={lr:g}"]
        return args + list(self.s.finetune_opts)

    def _config_lr(self) -> float:
        from detectron2.config import LazyConfig

        return float(LazyConfig.load(self.finetune_config).optimizer.lr)

    def choose_lr(self, arm: str, init: str) -> Tuple[float, float]:
        """(lr, schedule fraction) of ``arm``: given, or chosen on the held-out share."""
        s, d = self.s, self.state["data"]
        base = self._config_lr()
        if s.lr or len(s.lr_factors) == 1:
            lr = s.lr or base * s.lr_factors[0]
            return lr, 1.0
        chosen = self.state.setdefault("lr_choice", {}).get(arm)
        if chosen:
            return chosen["lr"], chosen["fraction"]
        data = self.out / "data"
        tune_train, holdout = data / "tune_train.json", data / "tune_holdout.json"
        if not holdout.exists():
            rest, held = _split(
                json.loads(Path(d["train_json"]).read_text()), HOLDOUT_SHARE, s.seed + 1
            )
            _write_json(tune_train, rest)
            _write_json(holdout, held)
        n_rest = len(json.loads(tune_train.read_text())["images"])
        iters = s.finetune_iters or finetune_schedule(n_rest)
        candidates: Dict[float, Dict[float, float]] = {}
        for factor in s.lr_factors:
            lr = base * factor
            out_dir = self.out / "tune" / f"{arm}_lr{lr:g}"
            print(
                f"  {arm}: lr {lr:g} ({factor:g} x the config's) on {n_rest} images, scored on "
                f"the {d['train'] - n_rest} held-out"
            )
            self._train(
                f"lr choice ({arm})",
                self._finetune_args(str(tune_train), str(holdout), init, lr)
                + [f"train.eval_period={max(1, round(iters / 3))}"],
                out_dir,
                iters,
            )
            pts = eval_points(out_dir, iters, [("bbox", "AP50")])
            candidates[lr] = {round(it / iters, 3): v["bbox/AP50"] for it, v in pts.items()}
        lr, frac, ap = choose(candidates)
        self.state["lr_choice"][arm] = {
            "lr": lr,
            "fraction": frac,
            "holdout_AP50": ap,
            "config_lr": base,
            "candidates": {f"{k:g}": v for k, v in candidates.items()},
        }
        self.save()
        if ap != ap:
            print(f"  {arm}: no candidate detected anything on the held-out images: lr {lr:g}")
        else:
            print(
                f"  {arm}: chose lr {lr:g} and {frac:.0%} of the schedule (held-out AP50 {ap:.2f})"
            )
        return lr, frac

    def finetune(self, exported: Path) -> Dict[str, Path]:
        s, d = self.s, self.state["data"]
        arms = {"aligndet": str(exported)}
        if s.baseline:
            arms["scratch"] = ""
        full = s.finetune_iters or finetune_schedule(d["train"])
        factors = ", ".join(f"{f:g}" for f in s.lr_factors)
        how = (
            "given"
            if s.lr or len(s.lr_factors) == 1
            else f"chosen per arm among {factors} x the config's, on {HOLDOUT_SHARE:.0%} of the "
            "labeled train images held out (never on val)"
        )
        self.log.stage(4, f"fine-tune lr: {how}")
        plan = {arm: self.choose_lr(arm, init) for arm, init in arms.items()}
        self.log.stage(
            5,
            f"fine-tuning on the {d['train']} labeled images ({self.finetune_config}"
            + (", frozen backbone + parallel adapters" if self.variant else "")
            + f"), evaluated on the {d['val']} val images",
        )
        runs = {}
        for arm, init in arms.items():
            lr, frac = plan[arm]
            iters = max(1, round(full * frac))
            out_dir = self.out / f"finetune_{arm}"
            print(
                f"  {arm}: lr {lr:g}, {iters} iterations"
                + (" from the export" if init else " (neck and heads from scratch)")
            )
            self._train(
                f"fine-tune ({arm})",
                self._finetune_args(d["train_json"], d["val_json"], init, lr)
                + [f"train.eval_period={max(1, round(iters / 3))}"],
                out_dir,
                iters,
            )
            self.state.setdefault("finetune", {})[arm] = {"lr": lr, "iters": iters}
            runs[arm] = out_dir
        self.save()
        return runs

    def report(self, runs: Dict[str, Path]) -> Path:
        from .recipe_report import write_recipe_report

        self.log.stage(6, f"report -> {self.out / 'report.md'}")
        self.state["seconds"] = {**self.state.get("seconds", {}), **self.log.seconds}
        self.save()
        path = self.log.timed("report", lambda: write_recipe_report(self, runs))
        self.state["seconds"]["report"] = self.log.seconds["report"]
        return path


def run_recipe(settings: RecipeSettings) -> Path:
    """Runs (or continues) the recipe; returns the path of ``report.md``.

    Raises:
        DatasetError: the inputs' problems, before anything trains.
    """
    r = Recipe(settings)
    r.out.mkdir(parents=True, exist_ok=True)
    r.state["settings"] = {k: v for k, v in asdict(settings).items()}
    r.log.stage(0, f"checking the images of {r.images} and the labels")
    r.log.timed("checks", r.check_inputs)
    exported = r.pretrain()
    runs = r.finetune(exported)
    path = r.report(runs)
    total = time.time() - r.log.t0
    r.state["wall_seconds"] = total
    r.save()
    print(f"\n[recipe] done in {total / 60:.1f} min: {path}")
    return path
