#!/usr/bin/env python
"""The low-data protocol on PASCAL VOC 2007: pre-train on a large unlabeled pool, fine-tune on a few
labels, AlignDet against neck and heads from scratch.

Per detector (CPU configs): selective-search proposals of every VOC ``train`` image (no labels)
-> AlignDet pre-training on all of them -> export -> fine-tuning on p % of ``train`` labeled
(tools/low_data_splits.py; one labeled split per seed) from the export ("aligndet") and, with the
very same config, from the ImageNet backbone with neck and heads from scratch ("scratch") ->
VOC's AP50 (11-point, difficult ignored), COCO-style AP and class-agnostic AP on a fixed part of
VOC ``val`` (its first ``--val-images`` images in the official order), evaluated at 1/3, 2/3 and
the end of the fine-tune schedule. Also measured: the recall of the pre-training proposals against
VOC's ``train`` boxes, and what pre-training alone taught the RPN (its class-agnostic recall on the
``val`` part, against a randomly initialised RPN and the selective-search proposals of the same
images). ``val`` images are never pre-trained or fine-tuned on.

    python benchmarks/low_data.py --detectors faster_rcnn --percents 5 10
    python benchmarks/low_data.py --detectors faster_rcnn --percents 10 \
        --pretrain-iters 1250 2500 10000          # how the gain scales with pre-training

Resumable: every finished run is recorded in --manifest (benchmarks/results/low_data_runs.json,
committed with the report) and skipped; an interrupted one resumes from its last checkpoint under
--work-dir. The report (<out>.md, .json, .png) holds every run of the manifest, whichever command
ran it, so a grid can be filled over several sessions, on fresh checkouts too (pre-training is
redone there when a new AlignDet fine-tune needs its export). Two processes may fill one grid at
once, e.g. ``--arms scratch`` beside ``--arms aligndet``.

Choices (pre-training length, fine-tune schedule, options) are made with ``--holdout N``: the last
N ``train`` images (official order) are held out and evaluated on, the pool and the labeled splits
come from the others, and ``val`` is not touched; everything of this mode lives under
<work-dir>/holdout<N> and is reported to <out>_holdout<N>.*.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

from aligndet_d2.experiment import (
    DETECTORS,
    REPO,
    RESULTS,
    Manifest,
    Run,
    code_version,
    errorbar,
    eval_points,
    export_once,
    get_detector,
    logged_seconds,
    opts_for,
    opts_tag,
    proposals_once,
    write_report,
)
from aligndet_d2.utils.files import file_sha256

BATCH = 2  # images per iteration of the CPU configs
FOLDS = 3  # seeds per row of the protocol
METRICS = (
    ("bbox_voc", "AP50", "VOC AP50"),
    ("bbox", "AP", "AP"),
    ("bbox_agnostic", "AP", "class-agnostic AP"),
)

# AP50 by how many labeled images contain the class (configs/common/voc.py's evaluator).
FREQUENCY_BINS = ("rare", "common", "frequent")
FREQUENCY_METRICS = tuple(f"bbox_by_frequency/AP50_{b}" for b in FREQUENCY_BINS)


def _suffix(variant: str) -> str:
    """``_<variant>`` for a config variant's file and run names; '' for none."""
    return f"_{variant}" if variant else ""


def _log(msg: str) -> None:
    print(f"[low_data {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _subset_json(data: Dict, keep_ids, path: Path) -> str:
    keep = set(keep_ids)
    sub = dict(
        data,
        images=[im for im in data["images"] if im["id"] in keep],
        annotations=[a for a in data.get("annotations", []) if a["image_id"] in keep],
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or json.loads(path.read_text()) != sub:
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")  # another harness may read it
        tmp.write_text(json.dumps(sub))
        os.replace(tmp, path)
    return str(path)


def _boxes_by_image(data: Dict):
    """{image id: (N, 4) XYXY tensor} of a COCO json's annotations, in its file order."""
    import torch

    out = {im["id"]: [] for im in data["images"]}
    for a in data["annotations"]:
        if a.get("iscrowd", 0):
            continue
        x, y, w, h = a["bbox"]
        out[a["image_id"]].append([x, y, x + w, y + h])
    return {k: torch.tensor(v, dtype=torch.float32).reshape(-1, 4) for k, v in out.items()}


class Harness:
    def __init__(self, args):
        from aligndet_d2.data.voc import read_voc_split

        self.args = args
        self.data = Path(args.data).resolve()
        self.voc = self.data / "VOC2007"
        self.images = str(self.voc / "JPEGImages")
        self.work = Path(args.work_dir).resolve()
        train = json.loads((self.data / "annotations" / "train.json").read_text())
        val = json.loads((self.data / "annotations" / "val.json").read_text())
        self.name = "voc2007"
        for det in DETECTORS:  # a misspelt prefix fails now, not after hours of other runs
            opts_for(det, args.pretrain_opts, "--pretrain-opts")
            opts_for(det, args.finetune_opts, "--finetune-opts")
        for det in args.detectors:  # and so does a variant without its config
            try:
                self.pretrain_config(det), self.finetune_config(det)
            except KeyError as e:
                raise SystemExit(f"{e.args[0]} (--pretrain/--finetune-variant)") from None
        if args.holdout:
            n = args.holdout
            if not 0 < n < len(train["images"]):
                raise SystemExit(
                    f"--holdout {n}: {self.data / 'annotations' / 'train.json'} has "
                    f"{len(train['images'])} images"
                )
            self.work = self.work / f"holdout{n}"
            self.name = f"voc2007_holdout{n}"
            pool, evaluated = train["images"][:-n], train["images"][-n:]
            eval_data, eval_split = train, f"holdout{n}"
        else:
            official = read_voc_split(str(self.voc), "val")[: args.val_images]
            by_file = {Path(im["file_name"]).stem: im for im in val["images"]}
            missing = [i for i in official if i not in by_file]
            if missing:
                raise SystemExit(f"{self.data}/annotations/val.json lacks val images {missing[:5]}")
            pool, evaluated = train["images"], [by_file[i] for i in official]
            eval_data, eval_split = val, f"val{len(evaluated)}"
        # Named train.json so that the splits are train.<seed>@<percent>.json.
        self.pool_json = _subset_json(
            train, [im["id"] for im in pool], self.work / "data" / "train.json"
        )
        self.eval_json = _subset_json(
            eval_data, [im["id"] for im in evaluated], self.work / "data" / f"{eval_split}.json"
        )
        self.eval_split = eval_split
        self.pool_size = len(pool)
        # The manifest lives beside the report, not in the work directory: it is committed, so
        # a grid filled over several sessions (each on a fresh checkout) keeps its finished rows.
        self.manifest_path = Path(args.manifest)
        if args.holdout:
            self.manifest_path = self.manifest_path.with_name(
                f"{self.manifest_path.stem}_holdout{n}{self.manifest_path.suffix}"
            )
        self.manifest = Manifest(self.manifest_path)
        from aligndet_d2.utils.machine import machine_summary

        self.machine = machine_summary()
        self.code = code_version()

    def _record(self, key: str, row: Dict) -> None:
        """Adds a finished run to the manifest, with the machine and the code version that
        finished it (a grid is filled over several sessions, not always on the same machine)."""
        self.manifest.record(key, {"code": self.code, **row, "machine": self.machine})

    # ----------------------------------------------------------------------------- data
    def splits(self) -> Dict[tuple, Dict]:
        """The labeled splits of the pool, {(seed, percent): row of write_low_data_splits}."""
        from aligndet_d2.data.splits import write_low_data_splits

        if not hasattr(self, "_splits"):
            out = self.work / "splits"
            rows = write_low_data_splits(
                self.pool_json, str(out), self.args.percents, self.args.seeds, nested=True
            )
            self._splits = {(r["seed"], r["percent"]): r for r in rows}
        return self._splits

    def eval_voc_dir(self) -> str:
        """A VOC folder (links to the real files) whose ImageSets list the evaluated images."""
        from aligndet_d2.data.voc import voc_subset

        ids = [
            Path(im["file_name"]).stem
            for im in json.loads(Path(self.eval_json).read_text())["images"]
        ]
        return voc_subset(str(self.voc), str(self.work / "data" / "VOC2007"), self.eval_split, ids)

    def proposals(self, json_file: str, tag: str, mode: str = "soco") -> str:
        """Selective-search proposals of the images of ``json_file`` (generated once)."""
        out = self.work / "proposals" / f"{tag}_{mode}.json"
        if not out.exists():
            _log(f"proposals ({mode}) for {json_file}")
        secs = proposals_once(
            self.images, out, coco_json=json_file, mode=mode, workers=self.args.workers
        )
        key = f"proposals/{tag}_{mode}"
        if secs is not None and key not in self.manifest:
            # Made again on a fresh work directory: keep the first.
            self._record(key, {"seconds": secs})
        return str(out)

    def clusters(self, props: str, det: str) -> str:
        """``props`` clustered into ``--detr-clusters`` pseudo-classes (made once)."""
        from aligndet_d2.data.clusters import ClusterSettings, cluster_proposals

        k = self.args.detr_clusters
        out = Path(props).with_name(Path(props).stem + f"_k{k}.json")
        if not out.exists():
            _log(f"clustering {props} into {k} pseudo-classes")
            t = time.time()
            info = cluster_proposals(
                props,
                self.images,
                self.pretrain_config(det),
                str(out),
                ClusterSettings(num_clusters=k, **get_detector(det).cluster_settings),
                cache_dir=props + ".features",  # any K: benchmarks/clusters.py reads it too
            )
            key = f"proposals/{out.stem}"
            if key not in self.manifest:
                self._record(key, {"seconds": time.time() - t, **info["seconds"]})
        return str(out)

    # ----------------------------------------------------------------------------- runs
    def pretrain_config(self, det: str) -> str:
        return get_detector(det).config("pretrain", "cpu", self.args.pretrain_variant)

    def finetune_config(self, det: str) -> str:
        return get_detector(det).config("finetune", "voc_cpu", self.args.finetune_variant)

    def pretrain_tag(self, det: str, iters: int) -> str:
        clusters = f"_k{self.args.detr_clusters}" if get_detector(det).needs_clusters else ""
        return f"soco_it{iters}{_suffix(self.args.pretrain_variant)}{clusters}" + opts_tag(
            opts_for(det, self.args.pretrain_opts, "--pretrain-opts")
        )

    def pretrain(self, det: str, iters: int) -> Path:
        tag = self.pretrain_tag(det, iters)
        run = self.work / det / "pretrain" / tag
        if not (run / "model_final.pth").exists():
            props = self.proposals(self.pool_json, "pool")
            extra = []
            if get_detector(det).needs_clusters:
                props = self.clusters(props, det)
                extra = [f"model.detector.num_classes={self.args.detr_clusters}"]
            _log(
                f"{det}: pre-training {tag} ({iters} iterations = "
                f"{iters * BATCH / self.pool_size:.2f} epochs of {self.pool_size} images)"
            )
            Run(
                self.pretrain_config(det),
                max_iter=iters,
                seed=0,
                data=(
                    f"dataloader.train.dataset.json_file={props}",
                    f"dataloader.train.dataset.image_root={self.images}",
                ),
                checkpoint_period=self.args.checkpoint_period,
                extra=(*extra, *opts_for(det, self.args.pretrain_opts, "--pretrain-opts")),
            ).train(run)
        key, sha = self.pretrain_identity(run)
        if self.manifest.get(key, {}).get("sha256", sha) != sha:
            # Done again (a fresh checkout without the work directory): its fine-tunes come from
            # another pre-training than the recorded one, and the report says which.
            key = f"{key}#{sha[:12]}"
        if key not in self.manifest:
            self._record(key, {"seconds": logged_seconds(run), "sha256": sha})
        return run

    def pretrain_identity(self, run: Path):
        """(manifest key, sha256 of model_final.pth) of a finished pre-training run."""
        return str(run.relative_to(self.work)), file_sha256(run / "model_final.pth")

    def export(self, run: Path) -> Path:
        return export_once(run, keep_reg=self.args.keep_reg, drop_rpn=self.args.drop_rpn)

    def finetune_iters(self, percent: float) -> int:
        n = self.splits()[(self.args.seeds[0], percent)]["labeled_images"]
        return max(3, int(round(self.args.finetune_epochs * n / BATCH)))

    def _ft_dir(self, det: str) -> Path:
        opts = opts_for(det, self.args.finetune_opts, "--finetune-opts")
        if self.args.keep_reg:
            opts = opts + list(get_detector(det).keep_reg)
        ep = "" if self.args.finetune_epochs == 12 else f"_ep{self.args.finetune_epochs:g}"
        # The evaluated images are part of the name unless they are the default 1000 of val.
        ev = "" if self.eval_split in ("val1000",) or self.args.holdout else f"_{self.eval_split}"
        name = f"ft{_suffix(self.args.finetune_variant)}" + ep + ev + opts_tag(opts)
        return self.work / det / name, opts

    def finetune(self, det: str, percent: float, seed: int, arm: str, pretrain_iters: int):
        """One fine-tune; returns its manifest row, or None (--report-only, not run)."""
        ft_dir, opts = self._ft_dir(det)
        export_tag = "_keep_reg" * self.args.keep_reg + "_drop_rpn" * self.args.drop_rpn
        name = (
            "scratch" if arm == "scratch" else f"aligndet_{self.pretrain_tag(det, pretrain_iters)}"
        )
        name += export_tag if arm != "scratch" else ""
        run = ft_dir / f"{name}_p{percent:g}_seed{seed}"
        key = str(run.relative_to(self.work))
        if key in self.manifest:
            return self.manifest[key]
        iters = self.finetune_iters(percent)
        period = max(1, iters // 3)
        points = eval_points(run, iters, METRICS)
        if iters not in points:
            if self.args.report_only:
                return None
            init, pre = "", None
            if arm == "aligndet":
                pre_run = self.pretrain(det, pretrain_iters)
                init = str(self.export(pre_run))
                key_, sha = self.pretrain_identity(pre_run)
                pre = {"run": key_, "sha256": sha}
            split = self.splits()[(seed, percent)]
            # What the run starts from, written once, before its first iteration: a run resumed
            # later (perhaps after its pre-training was done again) keeps its true origin.
            prov = run / "provenance.json"
            if not prov.exists():
                run.mkdir(parents=True, exist_ok=True)
                prov.write_text(
                    json.dumps(
                        {
                            "code": self.code,
                            "split": {
                                "file": Path(split["labeled_file"]).name,
                                "sha256": file_sha256(Path(split["labeled_file"])),
                            },
                            "pretrain": pre,
                        },
                        indent=1,
                    )
                )
            _log(f"{det}: fine-tune {run.parent.name}/{run.name} ({iters} iterations)")
            Run(
                self.finetune_config(det),
                max_iter=iters,
                seed=seed,
                data=(
                    f"dataloader.train.dataset.names.name={self.name}_train.{seed}@{percent:g}",
                    f"dataloader.train.dataset.names.json_file={split['labeled_file']}",
                    f"dataloader.train.dataset.names.image_root={self.images}",
                    f"dataloader.test.dataset.names.name={self.name}_{self.eval_split}",
                    f"dataloader.test.dataset.names.dirname={self.eval_voc_dir()}",
                    f"dataloader.test.dataset.names.split={self.eval_split}",
                    "dataloader.test.dataset.names.coco_cache_dir="
                    f"{self.work / 'data' / 'coco_cache'}",
                ),
                init=init,
                eval_period=period,
                checkpoint_period=period,
                # Detectron2's writers keep the latest value of a metric only: a write between two
                # evaluations keeps each of them in metrics.json.
                log_period=min(20, period),
                extra=tuple(opts),
            ).train(run)
            points = eval_points(run, iters, METRICS)
            if iters not in points:
                sys.exit(f"{run}: no evaluation at iteration {iters} in metrics.json")
            _log(
                "  "
                + ", ".join(f"{label} {points[iters][f'{t}/{m}']:.2f}" for t, m, label in METRICS)
            )
        row = {
            "detector": det,
            "percent": percent,
            "seed": seed,
            "arm": arm,
            "pretrain_iters": pretrain_iters if arm == "aligndet" else None,
            "pretrain_epochs": (
                pretrain_iters * BATCH / self.pool_size if arm == "aligndet" else None
            ),
            "finetune": run.parent.name,
            "export": export_tag.strip("_") or "default",
            "iters": iters,
            "points": {str(k): v for k, v in sorted(points.items())},
            "seconds": logged_seconds(run),
        }
        prov = run / "provenance.json"
        if prov.exists():
            p = json.loads(prov.read_text())
            row.update(code=p["code"], split=p["split"])
            if p["pretrain"]:
                row["pretrain"] = p["pretrain"]
        self._record(key, row)
        return row

    # ----------------------------------------------------------------------------- recall
    def proposal_recall(self) -> Dict:
        """Recall of the pool's selective-search proposals (file order, as pre-training reads
        them) against the pool's ground-truth boxes."""
        from aligndet_d2.evaluation.recall import proposal_recall

        key = "recall/pool_proposals"
        if key not in self.manifest:
            gt = _boxes_by_image(json.loads(Path(self.pool_json).read_text()))
            props = _boxes_by_image(
                json.loads(Path(self.proposals(self.pool_json, "pool")).read_text())
            )
            ids = list(gt)
            self._record(key, proposal_recall([gt[i] for i in ids], [props[i] for i in ids]))
        return self.manifest[key]

    def rpn_recall(self, pretrain_iters: List[int]) -> Dict[str, Dict]:
        """AR@100 on the evaluated images of: the pre-trained RPN of each pre-training length
        (before any fine-tuning), a randomly initialised RPN on the ImageNet backbone, and the
        images' own selective-search proposals."""
        from aligndet_d2.evaluation.recall import proposal_recall

        out = {}
        gt_all = _boxes_by_image(json.loads(Path(self.eval_json).read_text()))
        key = "rpn_recall/selective_search"
        if key not in self.manifest and not self.args.report_only:
            props = _boxes_by_image(
                json.loads(Path(self.proposals(self.eval_json, self.eval_split)).read_text())
            )
            self._record(
                key,
                proposal_recall([gt_all[i] for i in gt_all], [props[i] for i in gt_all], ks=(100,)),
            )
        arms = [("random", "")] + [
            (self.pretrain_tag("faster_rcnn", it), None) for it in pretrain_iters
        ]
        for tag, init in arms:
            key = f"rpn_recall/{tag}"
            if key in self.manifest or self.args.report_only:
                continue
            if init is None:
                run = self.work / "faster_rcnn" / "pretrain" / tag
                if not (run / "model_final.pth").exists():
                    continue  # measured once the pre-training exists
                init = str(self.export(run))
            _log(f"faster_rcnn: RPN recall ({tag}) on {self.eval_split}")
            self._record(key, proposal_recall(*self._rpn_proposals(init, gt_all), ks=(100,)))
        for key, v in self.manifest.items():
            if key.startswith("rpn_recall/"):
                out[key.split("/", 1)[1]] = v
        return out

    def _rpn_proposals(self, init: str, gt_all: Dict):
        """The RPN's top proposals of each evaluated image, in its original coordinates."""
        import torch
        from detectron2.config import LazyConfig, instantiate

        from aligndet_d2.engine.train_loop import (
            check_init_checkpoint,
            load_init_checkpoint,
            resolve_device,
        )

        cfg = LazyConfig.load(str(REPO / "configs" / "finetune_faster_rcnn_voc_cpu.py"))
        cfg.dataloader.test.dataset.names.update(
            name=f"{self.name}_{self.eval_split}",
            dirname=self.eval_voc_dir(),
            split=self.eval_split,
            coco_cache_dir=str(self.work / "data" / "coco_cache"),
        )
        cfg.dataloader.test.num_workers = 0
        device = resolve_device(cfg)
        torch.manual_seed(0)  # the random RPN is the same one every time
        model = instantiate(cfg.model).to(device).eval()
        check_init_checkpoint(model, init)  # an export that does not fit fails here
        load_init_checkpoint(model, init)
        gts, props = [], []
        with torch.no_grad():
            for inputs in instantiate(cfg.dataloader.test):
                images = model.preprocess_image(inputs)
                features = model.backbone(images.tensor)
                proposals, _ = model.proposal_generator(images, features, None)
                for inp, p, size in zip(inputs, proposals, images.image_sizes):
                    boxes = p.proposal_boxes.clone()
                    boxes.scale(inp["width"] / size[1], inp["height"] / size[0])
                    props.append(boxes.tensor)
                    gts.append(gt_all[int(inp["image_id"])])
        return gts, props

    # ----------------------------------------------------------------------------- grid
    def run(self) -> None:
        for det in self.args.detectors:
            for percent in self.args.percents:
                for seed in self.args.seeds:
                    if "scratch" in self.args.arms:
                        self.finetune(det, percent, seed, "scratch", 0)
                    for it in self.args.pretrain_iters if "aligndet" in self.args.arms else ():
                        self.finetune(det, percent, seed, "aligndet", it)
        # With the AlignDet arm only, so that a concurrent --arms scratch process does not
        # measure the same recall beside it.
        recall = "aligndet" in self.args.arms and not self.args.skip_recall
        if "faster_rcnn" in self.args.detectors and recall:
            self.proposal_recall()
            self.rpn_recall(self.args.pretrain_iters)


def _epochs(e: float) -> str:
    n = f"{e:.2g}"
    return f"{n} epoch" + "s" * (n != "1")


def _natural(label: str) -> List[tuple]:
    """Sort key that orders the numbers in a label by value ("it312" before "it1250")."""
    return [(t.isdigit(), int(t) if t.isdigit() else t) for t in re.split(r"(\d+)", label)]


def _stats(vals: List[float]) -> Dict[str, float]:
    vals = [v for v in vals if not math.isnan(v)]
    if not vals:
        return {"mean": float("nan"), "min": float("nan"), "max": float("nan"), "n": 0}
    return {"mean": statistics.fmean(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def _pretrain_variant(r: Dict) -> str:
    """The --pretrain-opts of an AlignDet row as its pre-training run names them (e.g.
    ``negative_overlap_iou-0.5``; '' for the config as it is), read from the row's run name."""
    name = Path(r.get("run", "")).name
    m = re.fullmatch(
        rf"aligndet_soco_it{r['pretrain_iters']}(.*?)(_keep_reg)?(_drop_rpn)?_p.*", name
    )
    return m.group(1).strip("_") if m else ""


def _pretrain_run(r: Dict) -> str:
    """The pre-training run an AlignDet row was fine-tuned from: its checkpoint's sha256 (first
    12 digits), or what the manifest says of a run from before hashes were recorded."""
    pre = r.get("pretrain") or {}
    if "sha256" in pre:
        return pre["sha256"][:12]
    return pre.get("instance", "not recorded")


def mixed_pretraining(d: Dict) -> str:
    """'' when every fold of a paired row comes from one pre-training run (or none is known);
    otherwise which folds come from which run."""
    runs = d.get("pretrain_runs", [])
    if len(set(runs)) < 2:
        return ""
    folds = {}
    for seed, run in zip(d["seeds"], runs):
        folds.setdefault(run, []).append(str(seed))
    return f"{len(folds)} pre-training runs: " + "; ".join(
        f"fold{'s' * (len(f) > 1)} {', '.join(f)} from {run}" for run, f in folds.items()
    )


def summarize(rows: List[Dict]) -> Dict[str, List[Dict]]:
    """Per (detector, fine-tune config, percent, arm): AP at each evaluated iteration, mean and
    min-max over folds; and the paired (same fold) AlignDet minus scratch differences. An AlignDet
    arm is one pre-training length, pre-training variant and export."""
    groups: Dict[tuple, List[Dict]] = {}
    for r in rows:
        arm = "scratch" if r["arm"] == "scratch" else f"aligndet it{r['pretrain_iters']}"
        if r["arm"] != "scratch":
            variant = [v for v in (_pretrain_variant(r), r["export"]) if v not in ("", "default")]
            arm += f" ({', '.join(variant)})" if variant else ""
        groups.setdefault((r["detector"], r["finetune"], r["percent"], arm), []).append(r)

    def head(key, rs) -> Dict:
        det, ft, p, arm = key
        return dict(
            detector=det, finetune=ft, percent=p, arm=arm, pretrain_epochs=rs[0]["pretrain_epochs"]
        )

    arms = []
    order = sorted(groups.items(), key=lambda kv: (kv[0][:3], _natural(kv[0][3])))
    for key, rs in order:
        s = {
            **head(key, rs),
            "iters": rs[0]["iters"],
            "seeds": sorted(r["seed"] for r in rs),
            "seconds_per_run": statistics.fmean(r["seconds"] for r in rs),
            "points": {},
        }
        for it in rs[0]["points"]:
            s["points"][it] = {
                f"{t}/{m}": _stats([r["points"][it][f"{t}/{m}"] for r in rs if it in r["points"]])
                for t, m, _ in METRICS
            }
        # AP50 by class frequency in the labeled split, at the end, where every fold has it.
        end = [r["points"].get(str(r["iters"]), {}) for r in rs]
        s["by_frequency"] = {
            k: _stats([e[k] for e in end])
            for k in FREQUENCY_METRICS
            if all(k in e and e[k] == e[k] for e in end)  # NaN: no class in the bin
        }
        arms.append(s)
    paired = []
    for (det, ft, p, arm), rs in order:
        if arm == "scratch" or (det, ft, p, "scratch") not in groups:
            continue
        base = {r["seed"]: r for r in groups[(det, ft, p, "scratch")]}
        pairs = sorted(
            ((r, base[r["seed"]]) for r in rs if r["seed"] in base), key=lambda ab: ab[0]["seed"]
        )
        if not pairs:
            continue
        for a, b in pairs:
            # A fold is one labeled split: both arms of a pair must have trained on it.
            sa, sb = (x.get("split", {}).get("sha256") for x in (a, b))
            if sa and sb and sa != sb:
                raise SystemExit(
                    f"{a.get('run')} and {b.get('run')}: fold {a['seed']} of both arms, but "
                    f"trained on different labeled splits ({a['split']['file']} {sa[:12]}, "
                    f"{b['split']['file']} {sb[:12]})"
                )
        end = str(pairs[0][0]["iters"])
        d = {**head((det, ft, p, arm), rs), "seeds": [a["seed"] for a, _ in pairs]}
        # Which pre-training run each fold's AlignDet arm was fine-tuned from (folds filled in
        # other sessions may come from a pre-training done again).
        d["pretrain_runs"] = [_pretrain_run(a) for a, _ in pairs]
        d["mixed_pretraining"] = mixed_pretraining(d)
        for t, m, _ in METRICS:
            k = f"{t}/{m}"
            deltas = [a["points"][end][k] - b["points"][end][k] for a, b in pairs]
            d[k] = _stats(deltas)
            d[k]["folds_above"] = sum(x > 0 for x in deltas)
            d[k]["scratch_mean"] = statistics.fmean(b["points"][end][k] for _, b in pairs)
        # Convergence: the fraction of the schedule after which AlignDet first reaches scratch's
        # final VOC AP50 (None: not within the schedule), per fold.
        reach = []
        for a, b in pairs:
            target = b["points"][end]["bbox_voc/AP50"]
            hit = [
                int(it) / a["iters"]
                for it in sorted(a["points"], key=int)
                if a["points"][it]["bbox_voc/AP50"] >= target
            ]
            reach.append(hit[0] if hit else None)
        d["reaches_scratch_final_at"] = reach
        d["target"] = _targets(d)
        paired.append(d)
    return {"arms": arms, "paired": paired, "backbone_modes": backbone_modes(groups)}


def _mode_label(ft: str) -> str:
    """A fine-tune directory's backbone mode in words (ft -> trained, ft_frozen -> frozen, ...)."""
    if ft == "ft":
        return "trained"
    return ft[3:].replace("_backbone.bottom_up.adapters-", " + adapters ").replace("_", " ")


def _mode_arm(groups: Dict[tuple, List[Dict]], det: str, mode: str, p: float, arm: str):
    """The AlignDet arm that mode ``mode`` is compared with: ``arm`` itself, or, for a capacity
    mode, ``arm`` pre-trained with that capacity (a wide fine-tune loads a wide pre-training:
    ``ft_frozen_wide`` pairs with ``<arm> (wide)``). None when the mode has neither."""
    if (det, mode, p, arm) in groups:
        return arm
    for k in groups:
        if k[:3] == (det, mode, p) and k[3].startswith(f"{arm} (") and k[3].endswith(")"):
            if k[3][len(arm) + 2 : -1] in mode.split("_"):
                return k[3]
    return None


def backbone_modes(groups: Dict[tuple, List[Dict]]) -> List[Dict]:
    """Issue 16's comparison across backbone modes (trained, frozen, frozen + adapters, wide ...),
    per detector, percent and AlignDet arm: final VOC AP50 of each arm in each mode, AlignDet in
    each mode minus the best scratch arm of any mode, and adapters minus frozen in both arms.

    The table holds the folds and modes that fill the most cells; a mode still being run, with
    fewer folds, is listed in ``partial`` with its folds rather than shrinking the table. A
    capacity mode's AlignDet arm is the pre-training of that capacity (:func:`_mode_arm`)."""
    out = []
    key = "bbox_voc/AP50"
    for det, p in sorted({(k[0], k[2]) for k in groups}):
        modes = sorted(
            {k[1] for k in groups if k[:1] == (det,) and k[2] == p and k[3] == "scratch"}
        )
        modes = [m for m in modes if m == "ft" or m.startswith("ft_frozen")]
        base = sorted(
            {k[3] for k in groups if k[:3] == (det, "ft", p) and k[3] != "scratch"}, key=_natural
        )
        for arm in base:
            pair = {m: _mode_arm(groups, det, m, p, arm) for m in modes}
            final = {
                (m, a): {
                    r["seed"]: r["points"][str(r["iters"])][key]
                    for r in groups.get((det, m, p, a), [])
                }
                for m in modes
                if pair[m]
                for a in ("scratch", pair[m])
            }
            folds = {
                m: set(final[(m, "scratch")]) & set(final[(m, pair[m])]) for m in modes if pair[m]
            }
            if not folds:
                continue
            # The folds of some mode, and the modes that have them all: the choice with the most
            # cells (then the most modes) makes the table.
            seeds, done = max(
                (
                    (sorted(f), [m for m in modes if m in folds and f <= folds[m]])
                    for f in folds.values()
                ),
                key=lambda c: (len(c[1]) >= 2, len(c[0]) * len(c[1]), len(c[1])),
            )
            partial = {m: sorted(f) for m, f in folds.items() if m not in done}
            if len(done) < 2 or not seeds:
                continue
            best = [max(final[(m, "scratch")][s] for m in done) for s in seeds]
            d = {
                "detector": det,
                "percent": p,
                "arm": arm,
                "seeds": seeds,
                "modes": {m: _mode_label(m) for m in done},
                "arms": {m: pair[m] for m in done},
                "partial": {_mode_label(m): f for m, f in partial.items()},
                "scratch": {m: [final[(m, "scratch")][s] for s in seeds] for m in done},
                "aligndet": {m: [final[(m, pair[m])][s] for s in seeds] for m in done},
                "best_scratch": best,
                "vs_best_scratch": {},
                "adapters_vs_frozen": {},
            }
            for m in done:
                delta = [a - b for a, b in zip(d["aligndet"][m], best)]
                d["vs_best_scratch"][m] = {
                    **_stats(delta),
                    "folds_above": sum(x > 0 for x in delta),
                }
            for m in (m for m in done if "adapters" in m and "ft_frozen" in done):
                for a, name in (("scratch", "scratch"), ("aligndet", "aligndet")):
                    delta = [x - y for x, y in zip(d[a][m], d[a]["ft_frozen"])]
                    d["adapters_vs_frozen"][f"{m}/{name}"] = {
                        **_stats(delta),
                        "folds_above": sum(x > 0 for x in delta),
                    }
            out.append(d)
    return out


def _fmt(m: Dict) -> str:
    if m["n"] == 0:
        return "-"
    if m["n"] == 1 or m["min"] == m["max"]:
        return f"{m['mean']:.2f}"
    return f"{m['mean']:.2f} ({m['min']:.2f} to {m['max']:.2f})"


def _targets(d: Dict) -> str:
    """The issue's target for this paired row, met or not."""
    k = d["bbox_voc/AP50"]
    n = len(d["seeds"])
    every = k["folds_above"] == n
    if d["detector"] == "faster_rcnn":
        need = min(2.0, 0.1 * d["bbox_voc/AP50"]["scratch_mean"])
        ok, rule = every and k["mean"] >= need, f"every fold above and mean >= +{need:.2f}"
    else:
        ok, rule = every, "every fold above"
    # The second clause, for every row: AlignDet reaches scratch's final AP50 within 2/3
    # of the fine-tune schedule, in every fold.
    fast = sum(x is not None and x <= 2 / 3 + 1e-9 for x in d["reaches_scratch_final_at"])

    def verdict(ok: bool) -> str:
        # The protocol has 3 folds: a row with fewer is not judged yet, only followed.
        return (
            ("met" if ok else "not met") if n >= FOLDS else ("on track" if ok else "short so far")
        )

    folds = f"; {n} of {FOLDS} folds" if n < FOLDS else ""
    return (
        f"AP50: {verdict(ok)} ({rule}{folds}); 2/3 of the schedule: {verdict(fast == n)} "
        f"({fast}/{n} folds)"
    )


def markdown(report: Dict) -> str:
    a = report["args"]
    held = a.get("holdout")
    evaluated = (
        f"the last {held} VOC `train` images (held out of the pool and the splits)"
        if held
        else f"the first {a['val_images']} images of VOC 2007 `val` in the official order"
    )
    lines = [
        "# Low-data protocol on PASCAL VOC 2007: AlignDet vs neck and heads from scratch "
        "(CPU configs)",
        "",
        f"Report built on: {report['machine']}. Report date: {report['date']}.",
        "",
        "Runs (pre-trainings, fine-tunes, proposals, recall) by the machine that finished them: "
        + "; ".join(f"{m} ({c})" for m, c in report.get("run_machines", {}).items())
        + ".",
        "",
        f"Last command: `{report['command']}` (the tables hold every finished run of "
        f"`{a['manifest']}`, whichever command ran it).",
        "",
        f"Pool (pre-training, no labels): {report['pool_images']} VOC `train` images, "
        f"selective-search proposals. Labeled: p % of the pool (tools/low_data_splits.py, nested, "
        f"one split per seed; the seed is the fold and the fine-tune's train.seed). Evaluated on "
        f"{evaluated} with VOC's 11-point AP50 (difficult ignored), COCO-style AP and "
        f"class-agnostic AP. Fine-tune: configs/finetune_<detector>_voc_cpu.py, "
        f"{a['finetune_epochs']:g} epochs of the labeled images at batch {BATCH}, evaluated at "
        f"1/3, 2/3 and the end; both arms identical except `train.init_checkpoint`. Cells: mean "
        "(min to max over folds).",
        "",
        "## AlignDet minus scratch, paired by fold, end of schedule",
        "",
        "| detector | fine-tune | labeled | AlignDet pre-training | folds | VOC AP50 (scratch) | "
        "delta VOC AP50 | folds above | delta AP | delta class-agnostic AP | AlignDet reaches "
        "scratch's final AP50 at | target |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for d in report["summary"]["paired"]:
        reach = ", ".join("-" if x is None else f"{x:.2f}" for x in d["reaches_scratch_final_at"])
        mixed = d.get("mixed_pretraining")
        lines.append(
            f"| {d['detector']} | {d['finetune']} | {d['percent']:g} % | {d['arm']} "
            f"({_epochs(d['pretrain_epochs'])} of the pool{'; ' + mixed if mixed else ''}) | "
            f"{len(d['seeds'])} | "
            f"{d['bbox_voc/AP50']['scratch_mean']:.2f} | {_fmt(d['bbox_voc/AP50'])} | "
            f"{d['bbox_voc/AP50']['folds_above']}/{len(d['seeds'])} | {_fmt(d['bbox/AP'])} | "
            f"{_fmt(d['bbox_agnostic/AP'])} | {reach} | {d['target']} |"
        )
    lines += [
        "",
        '"Reaches ... at": the fraction of the fine-tune schedule at whose evaluation AlignDet '
        "first scores at least scratch's final VOC AP50, per fold (-: not within the schedule).",
        "",
        "## AP against fine-tune iterations",
        "",
        "| detector | fine-tune | labeled | arm | folds | iteration | VOC AP50 | AP | "
        "class-agnostic AP | minutes per run |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in report["summary"]["arms"]:
        for it, v in sorted(s["points"].items(), key=lambda kv: int(kv[0])):
            lines.append(
                f"| {s['detector']} | {s['finetune']} | {s['percent']:g} % | {s['arm']} | "
                f"{len(s['seeds'])} | {it} | {_fmt(v['bbox_voc/AP50'])} | {_fmt(v['bbox/AP'])} | "
                f"{_fmt(v['bbox_agnostic/AP'])} | {s['seconds_per_run'] / 60:.0f} |"
            )
    freq = [s for s in report["summary"]["arms"] if s.get("by_frequency")]
    if freq:
        lines += [
            "",
            "## AP50 by class frequency, end of schedule",
            "",
            "COCO-style AP50 averaged over the classes of each bin, the bins by the number of "
            "labeled images that contain the class (rare 1-10, common 11-100, frequent > 100; a "
            "class in no labeled image is rare); -: no class in the bin.",
            "",
            "| detector | fine-tune | labeled | arm | folds | "
            + " | ".join(f"AP50 {b}" for b in FREQUENCY_BINS)
            + " |",
            "|---|---|---|---|---|" + "---|" * len(FREQUENCY_BINS),
        ]
        for s in freq:
            cells = [
                _fmt(s["by_frequency"][k]) if k in s["by_frequency"] else "-"
                for k in FREQUENCY_METRICS
            ]
            lines.append(
                f"| {s['detector']} | {s['finetune']} | {s['percent']:g} % | {s['arm']} | "
                f"{len(s['seeds'])} | " + " | ".join(cells) + " |"
            )
    for d in report["summary"].get("backbone_modes", []):
        modes = list(d["modes"])
        lines += [
            "",
            f"## Backbone modes: {d['detector']}, {d['percent']:g} % labeled, {d['arm']}",
            "",
            "Final VOC AP50 per fold with the backbone trained (the CPU configs: from Lite0's 4th "
            "block), frozen, or frozen with residual adapters (Proper Reuse), neck and heads from "
            "scratch or from the AlignDet export; the best scratch arm of any mode per fold.",
            "",
            "| fold | "
            + " | ".join(f"scratch, {d['modes'][m]}" for m in modes)
            + " | "
            + " | ".join(f"AlignDet, {d['modes'][m]}" for m in modes)
            + " | best scratch |",
            "|---|" + "---|" * (2 * len(modes) + 1),
        ]
        for i, seed in enumerate(d["seeds"]):
            cells = [f"{d['scratch'][m][i]:.2f}" for m in modes]
            cells += [f"{d['aligndet'][m][i]:.2f}" for m in modes]
            lines.append(f"| {seed} | " + " | ".join(cells) + f" | {d['best_scratch'][i]:.2f} |")
        lines.append("")

        def signed(v):
            if v["min"] == v["max"]:
                return f"{v['mean']:+.2f}"
            return f"{v['mean']:+.2f} ({v['min']:+.2f} to {v['max']:+.2f})"

        for m in modes:
            v = d["vs_best_scratch"][m]
            lines.append(
                f"- AlignDet, {d['modes'][m]}, minus the best scratch arm: {signed(v)}, above it "
                f"in {v['folds_above']} of {len(d['seeds'])} folds."
            )
        for k, v in d["adapters_vs_frozen"].items():
            mode, arm = k.split("/")
            lines.append(
                f"- {d['modes'][mode]} minus frozen, {arm} arm: {signed(v)}, above in "
                f"{v['folds_above']} of {len(d['seeds'])} folds."
            )
        for m, a in d.get("arms", {}).items():
            if a != d["arm"]:
                lines.append(
                    f"- AlignDet, {d['modes'][m]}: the export of {a}, its own pre-training."
                )
        for label, folds in d.get("partial", {}).items():
            lines.append(f"- Not in the table until it has these folds: {label} (folds {folds}).")
    rec = report.get("proposal_recall")
    if rec:
        lines += [
            "",
            "## What pre-training learns from: the pool's proposals",
            "",
            f"Recall (%) of the selective-search proposals (first k per image in file order, as "
            f"pre-training reads them) against the VOC boxes of the pool's {rec['num_gt']} boxes "
            "(each box covered by its best proposal; AR: mean over IoU 0.5:0.95):",
            "",
            "| k | R@k, IoU 0.5 | AR@k |",
            "|---|---|---|",
        ]
        for k in (10, 32, 100):
            lines.append(f"| {k} | {rec[f'R@{k}/IoU0.5']:.1f} | {rec[f'AR@{k}']:.1f} |")
    rpn = report.get("rpn_recall")
    if rpn:
        lines += [
            "",
            "## What pre-training alone taught the RPN",
            "",
            f"Class-agnostic recall (%) of the top 100 proposals per image on {evaluated}, before "
            "any fine-tuning (Faster R-CNN; every box counted, difficult ones too):",
            "",
            "| proposals | R@100, IoU 0.5 | AR@100 |",
            "|---|---|---|",
        ]
        for tag, v in sorted(rpn.items(), key=lambda kv: _natural(kv[0])):
            label = {
                "random": "randomly initialised RPN (ImageNet backbone)",
                "selective_search": "selective search (the images' own proposals)",
            }.get(tag, f"AlignDet-pre-trained RPN ({tag})")
            lines.append(f"| {label} | {v['R@100/IoU0.5']:.1f} | {v['AR@100']:.1f} |")
    if report.get("notes"):
        lines += ["", "## Notes", "", report["notes"]]
    return "\n".join(lines) + "\n"


def plot(report: Dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted(
        {(s["detector"], s["finetune"], s["percent"]) for s in report["summary"]["arms"]}
    )
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 3.8), squeeze=False)
    for ax, (det, ft, p) in zip(axes[0], panels):
        for s in report["summary"]["arms"]:
            if (s["detector"], s["finetune"], s["percent"]) != (det, ft, p):
                continue
            pts = sorted((int(it), v["bbox_voc/AP50"]) for it, v in s["points"].items())
            errorbar(ax, pts, label=f"{s['arm']} ({len(s['seeds'])} folds)")
        ax.set_title(f"{det}, {p:g} % labeled ({ft})", fontsize=9)
        ax.set_xlabel("fine-tune iterations")
        ax.set_ylabel("VOC AP50")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--data",
        default="../shared/data/voc2007",
        help="folder with VOC2007/ (VOC layout) and annotations/{train,val}.json",
    )
    p.add_argument("--detectors", nargs="+", default=["faster_rcnn"], choices=list(DETECTORS))
    p.add_argument("--percents", nargs="+", type=float, default=[10.0])
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3], help="folds")
    p.add_argument(
        "--pretrain-iters",
        nargs="+",
        type=int,
        default=[1250],
        help="AlignDet pre-training lengths (1250 = 1 epoch of the 2501-image pool at batch 2)",
    )
    p.add_argument(
        "--finetune-epochs",
        type=float,
        default=12,
        help="fine-tune length in epochs of the labeled images (10 %%: 250 images -> 1500 "
        "iterations)",
    )
    p.add_argument("--val-images", type=int, default=1000, help="the first N of VOC val")
    p.add_argument("--pretrain-opts", nargs="*", default=[], metavar="[DETECTOR:]KEY=VALUE")
    p.add_argument(
        "--finetune-opts",
        nargs="*",
        default=[],
        metavar="[DETECTOR:]KEY=VALUE",
        help="config overrides of both fine-tune arms",
    )
    p.add_argument(
        "--detr-clusters",
        type=int,
        default=256,
        help="pseudo-classes of DETR's pre-training (the reference: 256)",
    )
    p.add_argument(
        "--pretrain-variant",
        default="",
        metavar="NAME",
        help="pre-train with configs/pretrain_box_<detector>_<NAME>_cpu.py (e.g. wide)",
    )
    p.add_argument(
        "--finetune-variant",
        default="",
        metavar="NAME",
        help="fine-tune both arms with configs/finetune_<detector>_<NAME>_voc_cpu.py (e.g. "
        "frozen, frozen_wide)",
    )
    p.add_argument("--keep-reg", action="store_true", help="export keeps the box regressor")
    p.add_argument("--drop-rpn", action="store_true", help="export drops the pre-trained RPN")
    p.add_argument("--checkpoint-period", type=int, default=250, help="of pre-training")
    p.add_argument("--skip-recall", action="store_true", help="no proposal / RPN recall")
    p.add_argument("--report-only", action="store_true", help="train nothing: report")
    p.add_argument(
        "--holdout",
        type=int,
        default=0,
        metavar="N",
        help="tuning mode: evaluate on the last N train images, pool and splits from the others",
    )
    p.add_argument("--workers", type=int, default=2, help="proposal processes")
    p.add_argument(
        "--arms",
        nargs="+",
        default=["scratch", "aligndet"],
        choices=["scratch", "aligndet"],
        help="which fine-tune arms to run (the report holds every finished one); recall is "
        "measured with the aligndet arm",
    )
    p.add_argument("--work-dir", default="output/bench_low_data")
    p.add_argument(
        "--manifest",
        default=str(RESULTS / "low_data_runs.json"),
        help="finished runs, kept across sessions (commit it); --holdout N adds _holdout<N>",
    )
    p.add_argument("--out", default=str(RESULTS / "low_data"), help="report path without suffix")
    p.add_argument("--notes", default="", help="markdown file whose text goes into the report")
    args = p.parse_args(argv)
    if args.drop_rpn and args.detectors != ["faster_rcnn"]:
        raise SystemExit("--drop-rpn: only Faster R-CNN has an RPN (--detectors faster_rcnn)")

    t0 = time.time()
    h = Harness(args)
    h.run()
    rows = sorted(
        ({**v, "run": k} for k, v in h.manifest.items() if "arm" in v),
        key=lambda r: (
            r["detector"],
            r["finetune"],
            r["percent"],
            r["arm"],
            r["export"],
            r["pretrain_iters"] or 0,
            r["seed"],
        ),
    )
    report = {
        "machine": h.machine,
        "date": time.strftime("%Y-%m-%d"),
        "command": "python benchmarks/low_data.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "args": {
            **{k: v for k, v in vars(args).items() if k not in ("out", "notes")},
            # The report is committed: no machine's absolute path in it.
            "manifest": os.path.relpath(Path(h.manifest_path).resolve(), REPO),
        },
        "pool_images": h.pool_size,
        "summary": summarize(rows),
        "rows": rows,
        "proposal_recall": h.manifest.get("recall/pool_proposals"),
        "rpn_recall": {
            k.split("/", 1)[1]: v for k, v in h.manifest.items() if k.startswith("rpn_recall/")
        },
        "seconds": {k: v["seconds"] for k, v in h.manifest.items() if "seconds" in v},
        "run_machines": dict(
            collections.Counter(
                v.get("machine", "not recorded") for v in h.manifest.values()
            ).most_common()
        ),
        "notes": Path(args.notes).read_text() if args.notes else "",
    }
    out = Path(args.out)
    if args.holdout:
        out = out.with_name(f"{out.name}_holdout{args.holdout}")
    write_report(report, out, markdown, plot)
    _log(f"done in {(time.time() - t0) / 60:.1f} min: {out}.md")


if __name__ == "__main__":
    main()
