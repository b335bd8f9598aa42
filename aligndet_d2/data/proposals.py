"""Unsupervised box proposals: OpenCV selective search, the SoCo filter, and the proposals json.

A proposals json is a COCO instances file with one category, ``selective_search``. Each annotation
is one kept box (``bbox`` as ``[x, y, w, h]`` in pixels) with its ``rank`` (0-based position among
the image's kept boxes, in selective-search order). Each image entry carries ``proposal_fallback``
(``None`` when the main filter kept boxes, else the looser filter that did; see
:meth:`ProposalFilter.apply`). The ``info`` block records the settings, the tool version and the
images that were skipped, with their reasons.

Generation (:func:`generate_proposals`) runs over worker processes, is resumable after a kill at any
moment, and is deterministic: 1 worker, N workers and a resumed run write byte-identical files.
"""

from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import json
import logging
import math
import multiprocessing as mp
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "MODES",
    "IMAGE_EXTENSIONS",
    "ProposalFilter",
    "ProposalSettings",
    "ImageTask",
    "list_images",
    "selective_search",
    "propose_image",
    "generate_proposals",
    "check_proposals",
    "ProposalsError",
]

logger = logging.getLogger(__name__)

TOOL_NAME = "aligndet_d2.data.proposals"
CATEGORY = {"id": 1, "name": "selective_search", "supercategory": "proposal"}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

# Selective search modes. `soco` is the single strategy with SoCo's graph-segmentation settings (k
# 300, sigma 0.9; OpenCV's graph segmentation uses min_size 100, SoCo's value); `fast` and `quality`
# are OpenCV's multi-strategy presets, which give many more boxes at 6x and 25x the cost.
MODES = ("soco", "fast", "quality")
SOCO_K = 300
SOCO_SIGMA = 0.9


class ProposalsError(ValueError):
    """A proposals json, its images or the settings are wrong; the message names what and where."""


@dataclass(frozen=True)
class ProposalFilter:
    """Which selective-search boxes to keep (defaults: SoCo's filter, docs/DESIGN.md 2.1).

    Args:
        min_size: minimum box width and height in pixels.
        min_aspect: minimum width / height.
        max_aspect: maximum width / height.
        max_scale: maximum sqrt(box area / image area).
        top_k: keep at most this many boxes per image (the first in selective-search order), or
            None.
        dedup_iou: drop a box whose IoU with an earlier kept box exceeds this value, or None.
    """

    min_size: float = 32.0
    min_aspect: float = 1.0 / 3.0
    max_aspect: float = 3.0
    max_scale: float = 0.8
    top_k: Optional[int] = None
    dedup_iou: Optional[float] = None

    def __post_init__(self):
        problems = []
        if not (math.isfinite(self.min_size) and self.min_size >= 0):
            problems.append(f"min_size={self.min_size} (allowed: a number >= 0)")
        if not (0 < self.min_aspect <= self.max_aspect < math.inf):
            problems.append(
                f"min_aspect={self.min_aspect}, max_aspect={self.max_aspect} "
                "(allowed: 0 < min_aspect <= max_aspect, both finite)"
            )
        if not (0 < self.max_scale <= 1):
            problems.append(f"max_scale={self.max_scale} (allowed: 0 < max_scale <= 1)")
        if self.top_k is not None and (int(self.top_k) != self.top_k or self.top_k < 1):
            problems.append(f"top_k={self.top_k} (allowed: an integer >= 1, or None for no cap)")
        if self.dedup_iou is not None and not (0 < self.dedup_iou < 1):
            problems.append(f"dedup_iou={self.dedup_iou} (allowed: 0 < dedup_iou < 1, or None)")
        if problems:
            raise ProposalsError("impossible proposal filter: " + "; ".join(problems))

    def passes(self, boxes: np.ndarray, width: int, height: int, level: Optional[str] = None):
        """Boolean mask of boxes that pass the filter at a given fallback level.

        Args:
            boxes: (N, 4) float array of ``[x, y, w, h]`` boxes.
            width, height: image size in pixels.
            level: None for the full filter, ``"aspect_ratio"`` for the aspect-ratio test alone,
                ``"min_size"`` for the minimum-side test alone (SoCo's two fallbacks).

        Returns:
            (N,) bool array.
        """
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        w, h = boxes[:, 2], boxes[:, 3]
        with np.errstate(divide="ignore", invalid="ignore"):
            aspect = np.where(h > 0, w / np.maximum(h, 1e-12), np.inf)
        size_ok = (w >= self.min_size) & (h >= self.min_size)
        # A tiny tolerance so that a box exactly at a limit (w/h == 1/3 in floating point) passes.
        aspect_ok = (aspect >= self.min_aspect * (1 - 1e-9)) & (
            aspect <= self.max_aspect * (1 + 1e-9)
        )
        if level == "aspect_ratio":
            return aspect_ok & (w > 0) & (h > 0)
        if level == "min_size":
            return size_ok & (w > 0) & (h > 0)
        if level is not None:
            raise ProposalsError(f"unknown fallback level {level!r} (allowed: None, {FALLBACKS})")
        scale_ok = (
            np.sqrt(np.maximum(w * h, 0)) <= self.max_scale * math.sqrt(width * height) + 1e-9
        )
        return size_ok & aspect_ok & scale_ok

    def apply(self, boxes: np.ndarray, width: int, height: int) -> Tuple[np.ndarray, Optional[str]]:
        """Filters, de-duplicates and caps an image's boxes, falling back as SoCo does.

        When no box passes the full filter, keep those that pass the aspect-ratio test alone; if
        still none, those with both sides >= ``min_size``.

        Args:
            boxes: (N, 4) ``[x, y, w, h]`` boxes in selective-search order.
            width, height: image size in pixels.

        Returns:
            (kept boxes (K, 4) in their original order, the fallback level used or None).
        """
        boxes = np.asarray(boxes).reshape(-1, 4)
        fallback = None
        keep = self.passes(boxes, width, height)
        for level in FALLBACKS:
            if keep.any() or len(boxes) == 0:
                break
            fallback = level
            keep = self.passes(boxes, width, height, level)
        kept = boxes[keep]
        if self.dedup_iou is not None and len(kept) > 1:
            kept = kept[_greedy_dedup(kept, self.dedup_iou)]
        if self.top_k is not None:
            kept = kept[: int(self.top_k)]
        if len(kept) == 0:
            fallback = "none"
        return kept, fallback


FALLBACKS = ("aspect_ratio", "min_size")


def _greedy_dedup(boxes: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices of the boxes kept when a box overlapping an earlier kept one too much is dropped."""
    x0, y0 = boxes[:, 0].astype(np.float64), boxes[:, 1].astype(np.float64)
    x1, y1 = x0 + boxes[:, 2], y0 + boxes[:, 3]
    area = boxes[:, 2].astype(np.float64) * boxes[:, 3]
    kept: List[int] = []
    for i in range(len(boxes)):
        if kept:
            k = np.asarray(kept)
            iw = np.clip(np.minimum(x1[i], x1[k]) - np.maximum(x0[i], x0[k]), 0, None)
            ih = np.clip(np.minimum(y1[i], y1[k]) - np.maximum(y0[i], y0[k]), 0, None)
            inter = iw * ih
            iou = inter / np.maximum(area[i] + area[k] - inter, 1e-12)
            if (iou > iou_threshold).any():
                continue
        kept.append(i)
    return np.asarray(kept, dtype=np.int64)


@dataclass(frozen=True)
class ProposalSettings:
    """Everything that decides the content of a proposals json (stored in its ``info``).

    Args:
        mode: one of :data:`MODES`.
        filter: the box filter.
        seed: value given to the C library's ``srand`` before each image (see
        :func:`selective_search`).
    """

    mode: str = "soco"
    filter: ProposalFilter = ProposalFilter()
    seed: int = 0

    def __post_init__(self):
        if self.mode not in MODES:
            raise ProposalsError(f"unknown selective search mode {self.mode!r} (allowed: {MODES})")

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        if self.mode == "soco":
            d["soco"] = {"k": SOCO_K, "sigma": SOCO_SIGMA, "min_size": 100}
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "ProposalSettings":
        return cls(mode=d["mode"], filter=ProposalFilter(**d["filter"]), seed=int(d["seed"]))


# --------------------------------------------------------------------------------------------------
# Selective search on one image
# --------------------------------------------------------------------------------------------------

_LIBC = None


def _srand(seed: int) -> None:
    # OpenCV's selective search shuffles regions with the C library's global rand() (via std::rand):
    # without a reseed the same image gives the same boxes in an order that depends on what the
    # process ran before, which breaks determinism across worker counts and resumed runs.
    global _LIBC
    if _LIBC is None:
        _LIBC = ctypes.CDLL(None)
    _LIBC.srand(ctypes.c_uint(seed & 0xFFFFFFFF))


def selective_search(image_bgr: np.ndarray, mode: str = "soco", seed: int = 0) -> np.ndarray:
    """Runs OpenCV's selective search on one image.

    Args:
        image_bgr: (H, W, 3) uint8 image in BGR order.
        mode: one of :data:`MODES`.
        seed: reseeds the C library's ``rand()`` first, which makes the box order reproducible.

    Returns:
        (N, 4) int64 array of ``[x, y, w, h]`` boxes in selective-search order.
    """
    import cv2

    if mode not in MODES:
        raise ProposalsError(f"unknown selective search mode {mode!r} (allowed: {MODES})")
    ss = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    ss.setBaseImage(np.ascontiguousarray(image_bgr))
    if mode == "soco":
        ss.switchToSingleStrategy(SOCO_K, SOCO_SIGMA)
    elif mode == "fast":
        ss.switchToSelectiveSearchFast()
    else:
        ss.switchToSelectiveSearchQuality()
    _srand(seed)
    rects = ss.process()
    return np.asarray(rects, dtype=np.int64).reshape(-1, 4)


@dataclass(frozen=True)
class ImageTask:
    """One image to process: its position in the input list and what the json says about it."""

    index: int
    file_name: str  # relative to the image root
    image_id: int
    width: Optional[int] = None  # from a COCO json input; checked against the decoded image
    height: Optional[int] = None
    extra: Optional[Dict[str, Any]] = (
        None  # other fields of the input image entry, kept as they are
    )


def _read_bgr(path: str) -> np.ndarray:
    # Detectron2's reader: the same EXIF orientation and RGB conversion as at training time, so
    # boxes computed here are on the image the model sees.
    from detectron2.data.detection_utils import read_image

    return read_image(path, format="BGR")


def propose_image(task: ImageTask, image_root: str, settings: ProposalSettings) -> Dict[str, Any]:
    """Runs selective search and the filter on one image.

    Returns:
        A json-ready record: ``{"index", "boxes": [[x, y, w, h], ...], "num_raw", "fallback",
        "width", "height"}``, or ``{"index", "skipped": reason}`` when the image is missing or does
        not decode.
    """
    path = os.path.join(image_root, task.file_name)
    if not os.path.isfile(path):
        return {"index": task.index, "skipped": "missing file"}
    try:
        img = _read_bgr(path)
    except Exception as e:  # PIL raises many types for corrupt or truncated files
        return {"index": task.index, "skipped": f"cannot decode: {type(e).__name__}: {e}"}
    height, width = img.shape[:2]
    if (task.width, task.height) != (None, None) and (task.width, task.height) != (width, height):
        return {
            "index": task.index,
            "skipped": f"size in json {task.width}x{task.height} != decoded {width}x{height}",
        }
    raw = selective_search(img, settings.mode, settings.seed)
    kept, fallback = settings.filter.apply(raw, width, height)
    return {
        "index": task.index,
        "width": int(width),
        "height": int(height),
        "num_raw": int(len(raw)),
        "fallback": fallback,
        "boxes": [[int(v) for v in b] for b in kept],
    }


# --------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------


def list_images(
    image_root: str, coco_json: Optional[str] = None
) -> Tuple[List[ImageTask], Dict[str, Any]]:
    """The images to process, in a fixed order.

    Args:
        image_root: folder holding the images (file names are relative to it).
        coco_json: a COCO json whose ``images`` list to use (ids, sizes and other fields are kept);
            when None, every image file under ``image_root`` (recursively, sorted by relative path,
            ids 1..N).

    Returns:
        (tasks, extra top-level json fields to carry over, such as ``licenses``).
    """
    if not os.path.isdir(image_root):
        raise ProposalsError(f"image root {image_root!r} is not a folder")
    if coco_json is None:
        root = Path(image_root)
        files = sorted(
            p.relative_to(root).as_posix()
            for p in root.rglob("*")
            if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
        )
        if not files:
            raise ProposalsError(
                f"no image files ({', '.join(IMAGE_EXTENSIONS)}) under {image_root!r}"
            )
        return [ImageTask(i, f, i + 1) for i, f in enumerate(files)], {}
    with open(coco_json) as f:
        data = json.load(f)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ProposalsError(f"{coco_json}: not a COCO json (no 'images' list)")
    tasks, seen = [], set()
    for i, im in enumerate(data["images"]):
        if "file_name" not in im or "id" not in im:
            raise ProposalsError(f"{coco_json}: images[{i}] has no 'file_name' or 'id': {im}")
        if im["id"] in seen:
            raise ProposalsError(f"{coco_json}: image id {im['id']} appears twice")
        seen.add(im["id"])
        extra = {k: v for k, v in im.items() if k not in ("id", "file_name", "width", "height")}
        tasks.append(
            ImageTask(
                i, im["file_name"], im["id"], im.get("width"), im.get("height"), extra or None
            )
        )
    if not tasks:
        raise ProposalsError(f"{coco_json}: the 'images' list is empty")
    carry = {k: data[k] for k in ("licenses",) if k in data}
    return tasks, carry


# --------------------------------------------------------------------------------------------------
# Parallel, resumable generation
# --------------------------------------------------------------------------------------------------


def _worker_init() -> None:
    import cv2

    # One OpenCV thread per worker: the workers are the parallelism.
    cv2.setNumThreads(1)


def _worker(args) -> Dict[str, Any]:
    task, image_root, settings = args
    return propose_image(task, image_root, settings)


def _run_key(tasks: Sequence[ImageTask], image_root: str, settings: ProposalSettings) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(settings.to_dict(), sort_keys=True).encode())
    h.update(os.path.abspath(image_root).encode())
    for t in tasks:
        h.update(f"{t.index}\t{t.file_name}\t{t.image_id}\n".encode())
    return h.hexdigest()


def _load_partial(parts_path: Path, run_key: str) -> Dict[int, Dict[str, Any]]:
    """Reads finished records from a parts file, dropping a torn last line (killed mid-write)."""
    done: Dict[int, Dict[str, Any]] = {}
    with open(parts_path, "rb") as f:
        data = f.read()
    good_end = 0
    pos = 0
    first = True
    while True:
        nl = data.find(b"\n", pos)
        if nl < 0:
            break
        line = data[pos:nl]
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            break
        if first:
            if rec.get("run_key") != run_key:
                raise ProposalsError(
                    f"{parts_path} holds a run with other images or settings; delete it or pass "
                    "--overwrite to start over"
                )
            first = False
        else:
            done[int(rec["index"])] = rec
        pos = good_end = nl + 1
    if good_end != len(data):
        # Truncate the torn tail so that appended records start on a clean line.
        with open(parts_path, "r+b") as f:
            f.truncate(good_end)
    if first:  # not even the header survived
        parts_path.unlink()
    return done


def _assemble(
    tasks: Sequence[ImageTask],
    records: Dict[int, Dict[str, Any]],
    settings: ProposalSettings,
    carry: Dict[str, Any],
    source: Dict[str, Any],
) -> Dict[str, Any]:
    from aligndet_d2 import __version__

    images, annotations, skipped = [], [], []
    fallbacks: Dict[str, List[str]] = {k: [] for k in FALLBACKS + ("none",)}
    ann_id = 1
    for t in tasks:
        rec = records[t.index]
        if "skipped" in rec:
            skipped.append({"file_name": t.file_name, "id": t.image_id, "reason": rec["skipped"]})
            continue
        im = {"id": t.image_id, "file_name": t.file_name, "width": rec["width"]}
        im["height"] = rec["height"]
        im.update(t.extra or {})
        im["proposal_fallback"] = rec["fallback"]
        im["num_raw_proposals"] = rec["num_raw"]
        images.append(im)
        if rec["fallback"]:
            fallbacks[rec["fallback"]].append(t.file_name)
        for rank, (x, y, w, h) in enumerate(rec["boxes"]):
            annotations.append(
                {
                    "id": ann_id,
                    "image_id": t.image_id,
                    "category_id": CATEGORY["id"],
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                    "rank": rank,
                }
            )
            ann_id += 1
    info = {
        "description": "selective search proposals (aligndet_d2)",
        "tool": TOOL_NAME,
        "version": __version__,
        "settings": settings.to_dict(),
        "source": source,
        "num_images": len(images),
        "num_proposals": len(annotations),
        "skipped_images": skipped,
        "fallback_images": fallbacks,
    }
    out = {"info": info, **carry, "images": images, "annotations": annotations}
    out["categories"] = [CATEGORY]
    return out


def generate_proposals(
    image_root: str,
    output: str,
    *,
    coco_json: Optional[str] = None,
    settings: ProposalSettings = ProposalSettings(),
    num_workers: int = 1,
    strict: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> Dict[str, Any]:
    """Generates a proposals json for every image of a folder or a COCO json; resumable.

    Finished images are appended to ``<output>.partial.jsonl`` as they complete, so a run killed at
    any moment continues where it stopped when called again with the same arguments. The final json
    is assembled in input order, which makes it independent of the number of workers.

    Args:
        image_root: folder with the images.
        output: path of the proposals json to write.
        coco_json: optional COCO json whose image list to use (see :func:`list_images`).
        settings: mode, filter and seed.
        num_workers: worker processes (1 runs in this process).
        strict: stop with an error at the first missing or corrupt image instead of skipping it.
        overwrite: discard an existing output or partial run instead of resuming it.
        progress: show a progress bar (images done, images/s, ETA).

    Returns:
        A summary dict: ``{"output", "num_images", "num_proposals", "skipped", "fallbacks",
        "resumed"}``.
    """
    tasks, carry = list_images(image_root, coco_json)
    source = {"image_root": os.path.basename(os.path.normpath(image_root))}
    if coco_json:
        source["coco_json"] = os.path.basename(coco_json)
    out_path = Path(output)
    parts_path = out_path.with_name(out_path.name + ".partial.jsonl")
    run_key = _run_key(tasks, image_root, settings)
    if overwrite:
        parts_path.unlink(missing_ok=True)
    elif out_path.exists() and not parts_path.exists():
        existing = _read_json(out_path)
        info = existing.get("info", {})
        if info.get("settings") != settings.to_dict() or info.get("source") != source:
            raise ProposalsError(
                f"{out_path} exists and was made from other images or settings; pass --overwrite "
                "to replace it"
            )
        logger.info(f"{out_path} is already complete; nothing to do (--overwrite to redo it)")
        return _summary(out_path, existing, resumed=True)

    done: Dict[int, Dict[str, Any]] = {}
    if parts_path.exists():
        done = _load_partial(parts_path, run_key)
    resumed = bool(done)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if not parts_path.exists():
        with open(parts_path, "w") as f:
            f.write(json.dumps({"run_key": run_key}) + "\n")
    todo = [t for t in tasks if t.index not in done]
    if resumed:
        logger.info(f"resuming {parts_path}: {len(done)} of {len(tasks)} images already done")

    with open(parts_path, "a") as parts:
        for rec in _run(todo, image_root, settings, num_workers, progress, len(tasks), len(done)):
            if "skipped" in rec and strict:
                t = tasks[rec["index"]]
                raise ProposalsError(
                    f"{os.path.join(image_root, t.file_name)}: {rec['skipped']} (--strict; "
                    f"{len(done)} finished images are kept in {parts_path} for a resumed run)"
                )
            # One write per record, flushed: a kill can only tear the last line, which
            # _load_partial drops.
            parts.write(json.dumps(rec, separators=(",", ":")) + "\n")
            parts.flush()
            done[rec["index"]] = rec

    result = _assemble(tasks, done, settings, carry, source)
    tmp = out_path.with_name(out_path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(result, f, separators=(",", ":"))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out_path)
    parts_path.unlink()
    return _summary(out_path, result, resumed)


def _run(todo, image_root, settings, num_workers, progress, total, already) -> Iterator[dict]:
    from tqdm import tqdm

    bar = tqdm(
        total=total,
        initial=already,
        unit="img",
        desc="proposals",
        disable=not progress,
        dynamic_ncols=True,
        smoothing=0.1,
    )
    args = [(t, image_root, settings) for t in todo]
    try:
        if num_workers <= 1:
            _worker_init()
            for a in args:
                yield _worker(a)
                bar.update(1)
        else:
            with mp.get_context("fork").Pool(num_workers, initializer=_worker_init) as pool:
                for rec in pool.imap_unordered(_worker, args, chunksize=1):
                    yield rec
                    bar.update(1)
    finally:
        bar.close()


def _summary(out_path: Path, result: Dict[str, Any], resumed: bool) -> Dict[str, Any]:
    info = result["info"]
    return {
        "output": str(out_path),
        "num_images": info["num_images"],
        "num_proposals": info["num_proposals"],
        "skipped": info["skipped_images"],
        "fallbacks": {k: len(v) for k, v in info["fallback_images"].items()},
        "resumed": resumed,
    }


def _read_json(path) -> Dict[str, Any]:
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ProposalsError(f"{path}: not valid json ({e})") from e


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------


def check_proposals(
    json_file: str, image_root: str, *, decode: bool = True, max_errors: int = 20
) -> Dict[str, Any]:
    """Validates a proposals json against its images.

    Checks: the json's structure; unique image and annotation ids; every image exists under
    ``image_root`` and (with ``decode``) decodes to the recorded size; every box has positive size,
    lies inside its image and passes the filter recorded in ``info`` at the image's fallback level.

    Raises:
        ProposalsError: listing up to ``max_errors`` problems, each naming the json, the image
            and the box.

    Returns:
        ``{"num_images", "num_proposals"}`` when everything is right.
    """
    data = _read_json(json_file)
    errors: List[str] = []

    def err(msg):
        errors.append(f"{json_file}: {msg}")

    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise ProposalsError(f"{json_file}: no '{key}' list: not a proposals json")
    try:
        settings = ProposalSettings.from_dict(data["info"]["settings"])
    except (KeyError, TypeError) as e:
        raise ProposalsError(f"{json_file}: info.settings is missing or incomplete ({e})") from e
    images: Dict[Any, Dict[str, Any]] = {}
    for im in data["images"]:
        if im["id"] in images:
            err(f"image id {im['id']} appears twice ({im['file_name']})")
        images[im["id"]] = im
    for im in images.values():
        path = os.path.join(image_root, im["file_name"])
        if not os.path.isfile(path):
            err(f"image {im['file_name']} is not under the image root {image_root}")
        elif decode:
            try:
                h, w = _read_bgr(path).shape[:2]
            except Exception as e:
                err(f"image {im['file_name']} does not decode ({type(e).__name__}: {e})")
            else:
                if (w, h) != (im["width"], im["height"]):
                    err(
                        f"image {im['file_name']} is {w}x{h}, the json says "
                        f"{im['width']}x{im['height']}"
                    )
    ann_ids = set()
    for a in data["annotations"]:
        if a["id"] in ann_ids:
            err(f"annotation id {a['id']} appears twice")
        ann_ids.add(a["id"])
        im = images.get(a["image_id"])
        if im is None:
            err(
                f"annotation {a['id']} refers to image id {a['image_id']}, which is not in 'images'"
            )
            continue
        x, y, w, h = a["bbox"]
        where = f"image {im['file_name']}, annotation {a['id']}, box [x, y, w, h] = {a['bbox']}"
        if not (w > 0 and h > 0):
            err(f"{where}: degenerate box (width and height must be > 0)")
        elif x < 0 or y < 0 or x + w > im["width"] or y + h > im["height"]:
            err(f"{where}: outside the {im['width']}x{im['height']} image")
        elif not settings.filter.passes(
            np.asarray([a["bbox"]]), im["width"], im["height"], _level(im)
        )[0]:
            err(f"{where}: fails the filter {settings.filter} at level {_level(im)}")
        if len(errors) >= max_errors:
            break
    if errors:
        more = " (stopped at the first ones)" if len(errors) >= max_errors else ""
        raise ProposalsError(
            f"{len(errors)} problem(s){more}:\n  " + "\n  ".join(errors[:max_errors])
        )
    return {"num_images": len(images), "num_proposals": len(data["annotations"])}


def _level(image_entry: Dict[str, Any]) -> Optional[str]:
    level = image_entry.get("proposal_fallback")
    return None if level in (None, "none") else level
