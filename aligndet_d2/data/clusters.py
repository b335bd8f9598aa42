"""Cluster pseudo-labels of proposals: the classes of AlignDet's DETR pre-training
(docs/DESIGN.md 2.4).

For each proposal: RoIAlign of the frozen backbone's last feature map (the backbone pre-training
will use), averaged over the RoI -> one vector; PCA to 256-d and k-means with K clusters over all
proposals (scikit-learn); the proposals json is written again with categories ``cluster_1 ..
cluster_K`` (the reference's file format) and the settings and cluster sizes in ``info``.

A proposal's feature does not depend on the images it shares a forward with: only images whose
padded sizes are equal run together (padding to a larger image would change the convolutions near
the borders). Non-finite features (a broken checkpoint) stop the run with the image and the
checkpoint named, before any clustering.

Features are computed in shards of images, each saved as it finishes, so that an interrupted run
resumes; the same inputs and settings give the same clusters (eval-mode backbone, fixed seeds).
The cache is keyed by what the features depend on: the json's content (sha256), the image folder,
the backbone (config, overrides, checkpoint path and the sha256 of its weights, input
normalisation) and the feature settings; another K, PCA size, seed or k-means restarts reuse it,
anything else is refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..utils.files import file_sha256
from .datasets import read_proposals_json
from .proposals import ProposalsError

__all__ = [
    "ClusterSettings",
    "ClusterError",
    "cluster_features",
    "cluster_proposals",
    "proposal_features",
]

logger = logging.getLogger(__name__)


class ClusterError(ValueError):
    """Settings or inputs the clustering cannot use (too few proposals, a cache of another run,
    non-finite features)."""


@dataclass(frozen=True)
class ClusterSettings:
    """How proposals are described and clustered.

    Attributes:
        num_clusters: K, the number of pseudo-classes (the reference: 256).
        pca_dim: PCA dimension before k-means (the reference: 256; capped at the feature size).
        max_proposals: the first k proposals of each image, as pre-training reads them (DETR: 50);
            None: all. Only these are written to the output.
        short_edge: images resized so that their short side is this long ...
        max_size: ... and their long side at most this long.
        roi_size: RoIAlign output size, averaged into one vector per proposal.
        seed: seed of PCA's and k-means' random states.
        kmeans_init: k-means restarts (scikit-learn's ``n_init``); the best inertia is kept.
    """

    num_clusters: int = 256
    pca_dim: int = 256
    max_proposals: Optional[int] = 50
    short_edge: int = 800
    max_size: int = 1333
    roi_size: int = 7
    seed: int = 0
    kmeans_init: int = 3

    def __post_init__(self):
        if self.num_clusters < 2:
            raise ClusterError(f"num_clusters must be at least 2, got {self.num_clusters}")
        if self.pca_dim < 1 or self.roi_size < 1 or self.kmeans_init < 1:
            raise ClusterError("pca_dim, roi_size and kmeans_init must be positive")
        if self.max_proposals is not None and self.max_proposals < 1:
            raise ClusterError(f"max_proposals must be positive or None, got {self.max_proposals}")


# The settings the RoI features depend on (the rest only change the clustering).
_FEATURE_FIELDS = ("max_proposals", "short_edge", "max_size", "roi_size")


def cluster_features(
    features: np.ndarray, num_clusters: int, pca_dim: int = 256, seed: int = 0, n_init: int = 3
) -> Tuple[np.ndarray, Dict[str, Any]]:
    """PCA then k-means (scikit-learn), deterministic for a seed.

    Args:
        features: (N, C) float array, one row per proposal.
        num_clusters: K.
        pca_dim: PCA dimension (capped at C and N).
        seed: random state of both.
        n_init: k-means restarts.

    Returns:
        (labels (N,) int64 in [0, K), info: the PCA dimension used, its explained variance and the
        k-means inertia and iterations).

    Raises:
        ClusterError: fewer rows than clusters.
    """
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    n, c = features.shape
    if n < num_clusters:
        raise ClusterError(
            f"{num_clusters} clusters need at least as many proposals; there are {n}"
        )
    dim = min(pca_dim, c, n)
    x = features.astype(np.float32)
    pca = PCA(n_components=dim, random_state=seed)
    z = pca.fit_transform(x) if dim < c else x - x.mean(axis=0)
    km = KMeans(n_clusters=num_clusters, n_init=n_init, random_state=seed)
    labels = km.fit_predict(z)
    info = {
        "pca_dim": int(dim),
        "pca_explained_variance": float(pca.explained_variance_ratio_.sum()) if dim < c else 1.0,
        "kmeans_inertia": float(km.inertia_),
        "kmeans_iterations": int(km.n_iter_),
    }
    return labels.astype(np.int64), info


def _kept_annotations(data: Dict[str, Any], max_proposals: Optional[int]) -> List[List[int]]:
    """Per image (json order), the indices into ``data["annotations"]`` of its first proposals."""
    index = {im["id"]: i for i, im in enumerate(data["images"])}
    per_image: List[List[int]] = [[] for _ in data["images"]]
    for j, a in enumerate(data["annotations"]):
        i = index.get(a["image_id"])
        if i is None:
            raise ProposalsError(
                f"annotation {a.get('id')} refers to image {a['image_id']} not listed"
            )
        if max_proposals is None or len(per_image[i]) < max_proposals:
            per_image[i].append(j)
    return per_image


class _Backbone:
    """A config's backbone (the pre-training detector's, or a fine-tune detector's), frozen, with
    its input normalisation: ``(images) -> (N, C)`` RoI features of given boxes."""

    def __init__(self, config_file: str, opts: Sequence[str], device: str):
        from detectron2.checkpoint import DetectionCheckpointer
        from detectron2.config import LazyConfig, instantiate

        cfg = LazyConfig.apply_overrides(LazyConfig.load(config_file), list(opts))
        det = cfg.model.detector if "detector" in cfg.model else cfg.model
        backbone = instantiate(det.backbone)
        self.net = getattr(backbone, "bottom_up", backbone)  # the image network, not the FPN
        init = cfg.train.get("init_checkpoint", "")
        if init:
            holder = torch.nn.Module()
            holder.backbone = backbone  # Detectron2 names: backbone[.bottom_up].res5...
            DetectionCheckpointer(holder).load(init)
        # Hashed before the move to the device: no copies back from it.
        weights = _weights_sha256(self.net)
        self.net.eval().to(device)
        for p in self.net.parameters():
            p.requires_grad_(False)
        shapes = self.net.output_shape()
        self.feature = max(shapes, key=lambda k: shapes[k].stride)
        self.stride = shapes[self.feature].stride
        self.channels = shapes[self.feature].channels
        self.mean = torch.tensor(det.pixel_mean, device=device).view(-1, 1, 1)
        self.std = torch.tensor(det.pixel_std, device=device).view(-1, 1, 1)
        self.input_format = det.get("input_format", "BGR")
        self.size_divisibility = max(getattr(self.net, "size_divisibility", 0), self.stride)
        self.device = device
        # A checkpoint rewritten at the same path (or a config edited in place) changes the
        # weights, so their hash keys the cache beside the names.
        self.key = {
            "config_file": os.path.abspath(config_file),
            "opts": list(opts),
            "init_checkpoint": init,
            "weights_sha256": weights,
            "pixel_mean": self.mean.flatten().tolist(),
            "pixel_std": self.std.flatten().tolist(),
            "input_format": self.input_format,
            "feature": self.feature,
        }
        # For errors: the config, its other overrides and the checkpoint.
        described = [o for o in opts if not o.startswith("train.init_checkpoint=")]
        described.append(f"checkpoint {init}" if init else "no train.init_checkpoint")
        self.source = f"{config_file} ({', '.join(described)})"

    def padded_shape(self, image: torch.Tensor) -> Tuple[int, int]:
        """(H, W) of ``image`` padded as a forward pads it alone."""
        d = self.size_divisibility
        return tuple(-(-s // d) * d for s in image.shape[-2:])

    @torch.no_grad()
    def __call__(self, images: List[torch.Tensor], boxes: List[torch.Tensor], roi_size: int):
        """(N, C) mean RoI features of ``boxes`` (per image, resized-image pixels, XYXY).

        Raises:
            ValueError: the images pad to different sizes (their features would depend on the
                batch).
        """
        from detectron2.structures import ImageList
        from torchvision.ops import roi_align

        if len({self.padded_shape(im) for im in images}) > 1:
            raise ValueError("images of one forward must pad to the same size")
        x = [(im.to(self.device).float() - self.mean) / self.std for im in images]
        batch = ImageList.from_tensors(x, self.size_divisibility)
        feat = self.net(batch.tensor)[self.feature]
        rois = roi_align(
            feat,
            [b.to(self.device) for b in boxes],
            output_size=roi_size,
            spatial_scale=1.0 / self.stride,
            sampling_ratio=2,
            aligned=True,
        )
        return rois.mean(dim=(2, 3)).cpu().numpy()


def _weights_sha256(module: torch.nn.Module) -> str:
    """sha256 of a module's state (names, dtypes, shapes and bytes)."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _feature_inputs(
    json_file: str, image_root: str, backbone_key: Dict[str, Any], settings: ClusterSettings
) -> Dict[str, Any]:
    """What the features depend on, the cache's key: the json's content (not its path: a json
    edited in place is another input), the image folder, the backbone and the feature settings;
    not K, the PCA size, the seed or the k-means restarts, so that those reuse a cache."""
    return {
        "json_sha256": file_sha256(json_file),
        "image_root": os.path.abspath(image_root),
        **{f"backbone.{k}": v for k, v in backbone_key.items()},
        **{k: getattr(settings, k) for k in _FEATURE_FIELDS},
    }


def _run_key(inputs: Dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def _load_image(path: str, input_format: str, short_edge: int, max_size: int):
    """(C, H, W) uint8 tensor resized as the settings say, and the resize transform applied."""
    from detectron2.data import detection_utils as utils
    from detectron2.data import transforms as T

    try:
        img = utils.read_image(path, format=input_format)
    except Exception as e:  # PIL's errors for a corrupt or truncated file
        raise ProposalsError(f"{path}: cannot read the image ({e})") from e
    tf = T.ResizeShortestEdge(short_edge, max_size).get_transform(img)
    out = tf.apply_image(img)
    return torch.as_tensor(np.ascontiguousarray(out.transpose(2, 0, 1))), tf


def proposal_features(
    json_file: str,
    image_root: str,
    config_file: str,
    settings: ClusterSettings = ClusterSettings(),
    *,
    opts: Sequence[str] = (),
    cache_dir: Optional[str] = None,
    device: str = "cpu",
    batch_size: int = 4,
    shard_size: int = 64,
    progress: Optional[Callable[[int, int], None]] = None,
    data: Optional[Dict[str, Any]] = None,
) -> Tuple[np.ndarray, List[int], Dict[str, Any]]:
    """RoI features of the first ``settings.max_proposals`` proposals of every image.

    Args:
        json_file: proposals json (``tools/proposals.py generate``).
        image_root: folder of its images.
        config_file: config whose backbone (``model.detector.backbone`` or ``model.backbone``,
            its image network without the FPN) and ``train.init_checkpoint`` describe proposals;
            ``opts`` override it.
        cache_dir: where finished shards are saved; a rerun with the same inputs resumes there.
        device: torch device of the backbone.
        batch_size: images per forward, at most; only images whose padded sizes are equal run
            together, so that the features do not depend on the batch.
        shard_size: images per saved shard.
        progress: called with (images done, images in all) before the first shard and after each.
        data: ``json_file`` already read (:func:`~aligndet_d2.data.datasets.read_proposals_json`).

    Returns:
        (features (N, C) float32, annotation indices into the json's ``annotations`` (N,), info:
        the backbone feature used, its stride and channels).

    Raises:
        ProposalsError: the json or an image cannot be read (naming the file).
        ClusterError: the cache holds another run, or the backbone gives non-finite features
            (naming the images and the config and checkpoint).
    """
    data = data if data is not None else read_proposals_json(json_file)
    kept = _kept_annotations(data, settings.max_proposals)
    net = _Backbone(config_file, opts, device)
    inputs = _feature_inputs(json_file, image_root, net.key, settings)
    run_key = _run_key(inputs)
    cache = Path(cache_dir) if cache_dir else None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        head = cache / "run.json"
        old = json.loads(head.read_text()) if head.exists() else None
        # A head without shards (a run stopped before its first, e.g. by a broken checkpoint)
        # holds nothing to mix in.
        if old is not None and old.get("run_key") != run_key and any(cache.glob("shard_*.npz")):
            before = old.get("inputs") or {}
            differing = [k for k in inputs if before and before.get(k) != inputs[k]]
            why = f"differing: {', '.join(differing)}" if differing else "an older cache format"
            raise ClusterError(
                f"{cache} holds features of another json, image folder, backbone or settings "
                f"({why}); delete it or choose another cache folder"
            )
        tmp = head.with_suffix(".tmp")
        tmp.write_text(
            json.dumps({"run_key": run_key, "json_file": json_file, "inputs": inputs}, indent=1)
        )
        os.replace(tmp, head)  # a killed run never leaves a half-written head
    n_img = len(data["images"])
    feats: List[np.ndarray] = []
    rows: List[int] = []
    if progress is not None:
        progress(0, n_img)
    for s in range(0, n_img, shard_size):
        shard = cache / f"shard_{s // shard_size:06d}.npz" if cache is not None else None
        if shard is not None and shard.exists():
            z = np.load(shard)
            feats.append(z["features"])
            rows += z["rows"].tolist()
        else:
            f, r = _shard_features(
                data,
                kept,
                range(s, min(s + shard_size, n_img)),
                image_root,
                net,
                settings,
                batch_size,
            )
            feats.append(f)
            rows += r
            if shard is not None:
                tmp = shard.with_suffix(".tmp.npz")
                np.savez(tmp, features=f, rows=np.asarray(r, dtype=np.int64))
                os.replace(tmp, shard)  # a killed run never leaves half a shard
        if progress is not None:
            progress(min(s + shard_size, n_img), n_img)
    features = np.concatenate(feats) if feats else np.zeros((0, net.channels), np.float32)
    info = {"feature": net.feature, "stride": net.stride, "channels": net.channels}
    return features.astype(np.float32), rows, info


def _shard_features(data, kept, images, image_root, net, settings, batch_size):
    """Features and annotation rows of ``images`` (json order, whatever the batches)."""
    done: Dict[int, np.ndarray] = {}
    # Per padded size, images waiting for a forward: (image index, path, tensor, boxes).
    waiting: Dict[Tuple[int, int], List[Tuple[int, str, torch.Tensor, torch.Tensor]]] = {}

    def forward(group):
        f = net([g[2] for g in group], [g[3] for g in group], settings.roi_size)
        parts = np.split(f, np.cumsum([len(g[3]) for g in group])[:-1])
        bad = [g[1] for g, part in zip(group, parts) if not np.isfinite(part).all()]
        if bad:
            raise ClusterError(
                f"{', '.join(bad)}: non-finite (NaN or inf) features from the backbone of "
                f"{net.source}; check the checkpoint"
            )
        done.update((g[0], part) for g, part in zip(group, parts))

    for i in images:
        idx = kept[i]
        if not idx:  # an image without proposals adds no pseudo-label
            continue
        im = data["images"][i]
        path = os.path.join(image_root, im["file_name"])
        tensor, tf = _load_image(path, net.input_format, settings.short_edge, settings.max_size)
        xywh = np.asarray([data["annotations"][j]["bbox"] for j in idx], dtype=np.float32)
        # Original-image pixels to the resized image's, each axis by its own factor as the
        # pre-training mapper does (the rounded sizes make the two factors differ slightly).
        boxes = tf.apply_box(np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1))
        shape = net.padded_shape(tensor)
        group = waiting.setdefault(shape, [])
        group.append((i, path, tensor, torch.from_numpy(boxes.astype(np.float32))))
        if len(group) == batch_size:
            forward(waiting.pop(shape))
    for group in waiting.values():
        forward(group)
    order = [i for i in images if i in done]
    c = net.channels
    feats = np.concatenate([done[i] for i in order]) if order else np.zeros((0, c), np.float32)
    return feats, [j for i in order for j in kept[i]]


def cluster_proposals(
    json_file: str,
    image_root: str,
    config_file: str,
    output: str,
    settings: ClusterSettings = ClusterSettings(),
    **kwargs,
) -> Dict[str, Any]:
    """Writes ``output``: the proposals of ``json_file`` (the first ``settings.max_proposals`` per
    image) with cluster ids as categories ``cluster_1 .. cluster_K``; returns its ``info`` entry.

    Keyword arguments go to :func:`proposal_features`.
    """
    data = read_proposals_json(json_file)
    n = sum(len(k) for k in _kept_annotations(data, settings.max_proposals))
    if n < settings.num_clusters:  # before hours of features, not after
        raise ClusterError(
            f"{json_file}: {settings.num_clusters} clusters need at least as many proposals; "
            f"there are {n} (max_proposals={settings.max_proposals} per image)"
        )
    t0 = time.perf_counter()
    features, rows, feat_info = proposal_features(
        json_file, image_root, config_file, settings, data=data, **kwargs
    )
    t1 = time.perf_counter()
    labels, km_info = cluster_features(
        features, settings.num_clusters, settings.pca_dim, settings.seed, settings.kmeans_init
    )
    t2 = time.perf_counter()
    k = settings.num_clusters
    annotations = []
    for row, label in zip(rows, labels):
        a = dict(data["annotations"][row], category_id=int(label) + 1)
        annotations.append(a)
    sizes = np.bincount(labels, minlength=k)
    info = dict(data.get("info") or {})
    info["clusters"] = {
        **asdict(settings),
        "source": os.path.abspath(json_file),
        "config_file": config_file,
        "opts": list(kwargs.get("opts", ())),
        **feat_info,
        **km_info,
        "num_proposals": len(rows),
        "sizes": sizes.tolist(),
        "empty_clusters": int((sizes == 0).sum()),
        "seconds": {"features": round(t1 - t0, 1), "clustering": round(t2 - t1, 1)},
    }
    out = dict(
        data,
        info=info,
        annotations=annotations,
        categories=[{"id": i + 1, "name": f"cluster_{i + 1}"} for i in range(k)],
    )
    tmp = f"{output}.tmp"
    with open(tmp, "w") as f:
        json.dump(out, f)
    os.replace(tmp, output)
    return info["clusters"]
