"""Cluster pseudo-labels of proposals (DETR pre-training's classes)."""

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
from conftest import COCO64, CONFIGS, REPO, load_benchmark, write_subset_json

from aligndet_d2.data import clusters
from aligndet_d2.data.clusters import (
    ClusterError,
    ClusterSettings,
    cluster_features,
    cluster_proposals,
)
from aligndet_d2.data.proposals import ProposalsError

CONFIG = str(CONFIGS / "pretrain_box_faster_rcnn_cpu.py")
SMALL = ClusterSettings(num_clusters=4, pca_dim=8, max_proposals=6, short_edge=128, max_size=192)


def _blobs(seed=0):
    """Three well-separated blobs of 40 points in 16-d, in shuffled order, and their blob ids."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 10, (3, 16))
    truth = np.repeat(np.arange(3), 40)
    x = centers[truth] + rng.normal(0, 0.5, (120, 16))
    order = rng.permutation(120)
    return x[order].astype(np.float32), truth[order]


def test_known_clusters_are_found():
    x, truth = _blobs()
    labels, info = cluster_features(x, 3, pca_dim=4, seed=0)
    # The same partition, whatever the cluster numbering: one label per blob, one blob per label.
    pairs = set(zip(truth.tolist(), labels.tolist()))
    assert len(pairs) == 3 and len({t for t, _ in pairs}) == len({l for _, l in pairs}) == 3
    assert info["pca_dim"] == 4 and info["pca_explained_variance"] > 0.95


def test_clustering_is_deterministic():
    x, _ = _blobs(1)
    x = np.concatenate([x, np.random.default_rng(2).normal(0, 5, (200, 16)).astype(np.float32)])
    a, _ = cluster_features(x, 7, pca_dim=8, seed=3)
    b, _ = cluster_features(x, 7, pca_dim=8, seed=3)
    assert np.array_equal(a, b)


def test_more_clusters_than_proposals_is_a_clear_error():
    x, _ = _blobs()
    with pytest.raises(
        ClusterError, match="256 clusters need at least as many proposals; there are 120"
    ):
        cluster_features(x, 256)


@pytest.fixture()
def tiny(tmp_path):
    """Six coco64 train images and their boxes as proposals."""
    json_file = tmp_path / "proposals.json"
    write_subset_json(str(COCO64 / "annotations" / "train.json"), json_file, 6)
    return str(json_file)


def test_clustered_json_is_written_resumed_and_reproduced(tiny, tmp_path, monkeypatch):
    out = tmp_path / "clustered.json"
    cache = tmp_path / "cache"
    seen = []
    info = cluster_proposals(
        tiny,
        str(COCO64 / "images"),
        CONFIG,
        str(out),
        SMALL,
        cache_dir=str(cache),
        shard_size=4,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert seen == [(0, 6), (4, 6), (6, 6)]
    src = json.loads(open(tiny).read())
    data = json.loads(out.read_text())
    assert [c["name"] for c in data["categories"]] == [f"cluster_{i}" for i in range(1, 5)]
    per_image = {}
    for a in src["annotations"]:
        per_image.setdefault(a["image_id"], []).append(a["id"])
    kept = [i for ids in per_image.values() for i in ids[:6]]  # the first 6 of each image
    assert sorted(a["id"] for a in data["annotations"]) == sorted(kept)
    assert {a["category_id"] for a in data["annotations"]} <= {1, 2, 3, 4}
    assert sum(info["sizes"]) == len(kept) == info["num_proposals"]
    assert data["info"]["clusters"]["sizes"] == info["sizes"] and info["feature"] == "res5"
    # Resume: the shards are read back, no image is opened again, the result is the same.
    monkeypatch.setattr(clusters, "_load_image", lambda *a: pytest.fail("image re-read"))
    again = tmp_path / "again.json"
    cluster_proposals(
        tiny, str(COCO64 / "images"), CONFIG, str(again), SMALL, cache_dir=str(cache), shard_size=4
    )
    assert json.loads(again.read_text())["annotations"] == data["annotations"]
    # Another K (or PCA size, or seed) clusters the cached features: still no image read.
    three = tmp_path / "k3.json"
    cluster_proposals(
        tiny,
        str(COCO64 / "images"),
        CONFIG,
        str(three),
        replace(SMALL, num_clusters=3, seed=1),
        cache_dir=str(cache),
        shard_size=4,
    )
    assert len(json.loads(three.read_text())["categories"]) == 3
    # Features of another proposal count are not mixed in.
    with pytest.raises(ClusterError, match="holds features of another"):
        cluster_proposals(
            tiny,
            str(COCO64 / "images"),
            CONFIG,
            str(tmp_path / "p5.json"),
            replace(SMALL, max_proposals=5),
            cache_dir=str(cache),
        )
    # Another json in the same cache folder is refused rather than mixed in.
    other = tmp_path / "other.json"
    write_subset_json(str(COCO64 / "annotations" / "train.json"), other, 5, start=6)
    with pytest.raises(ClusterError, match="holds features of another"):
        cluster_proposals(
            str(other),
            str(COCO64 / "images"),
            CONFIG,
            str(tmp_path / "o.json"),
            SMALL,
            cache_dir=str(cache),
        )


def test_a_corrupt_image_names_the_file(tiny, tmp_path):
    root = tmp_path / "images"
    shutil.copytree(COCO64 / "images", root)
    first = json.loads(open(tiny).read())["images"][2]["file_name"]
    (root / first).write_bytes(b"not a jpeg")
    with pytest.raises(ProposalsError, match=first):
        cluster_proposals(tiny, str(root), CONFIG, str(tmp_path / "x.json"), SMALL)
    assert not (tmp_path / "x.json").exists()


def test_cli_writes_and_reports(tiny, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "k.json"
    cmd = [
        sys.executable,
        str(REPO / "tools" / "cluster_proposals.py"),
        "--json",
        tiny,
        "--image-root",
        str(COCO64 / "images"),
        "--config-file",
        CONFIG,
        "--output",
        str(out),
        "--num-clusters",
        "3",
        "--pca-dim",
        "4",
        "--max-proposals",
        "5",
        "--short-edge",
        "128",
        "--max-size",
        "192",
    ]
    run = subprocess.run(cmd, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "in 3 clusters" in run.stdout and out.exists()
    bad = subprocess.run(
        [*cmd[:-12], "--output", str(tmp_path / "y.json"), "--num-clusters", "1000"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1 and f"{tiny}: 1000 clusters need at least as many proposals" in (
        bad.stderr
    )


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"num_clusters": 1}, "num_clusters must be at least 2, got 1"),
        ({"max_proposals": 0}, "max_proposals must be positive or None, got 0"),
        ({"pca_dim": 0}, "pca_dim, roi_size and kmeans_init must be positive"),
    ],
)
def test_bad_settings_are_clear_errors(kwargs, message):
    with pytest.raises(ClusterError, match=message):
        ClusterSettings(**kwargs)


def test_clusters_benchmark_report_compares_the_libraries():
    bench = load_benchmark("clusters")
    r = {
        "machine": "m",
        "date": "d",
        "command": "python benchmarks/clusters.py",
        "json": "pool.json",
        "config": "c.py",
        "num_proposals": 1000,
        "feature_dim": 320,
        "feature_seconds": 400.0,
        "pca_dim": 256,
        "num_clusters": 256,
        "n_init": 3,
        "seed": 0,
        "sklearn": {"pca_seconds": 1.0, "kmeans_seconds": 100.0, "inertia": 2.0e7},
    }
    alone = bench.markdown(r)
    assert "| sklearn | 1.0 | 100.0 | 2e+07 |" in alone
    assert "faiss" not in alone.split("| library")[1]  # only scikit-learn ran
    r["faiss"] = {"pca_seconds": 0.5, "kmeans_seconds": 25.0, "inertia": 2.02e7}
    r["adjusted_rand"] = 0.5
    both = bench.markdown(r)
    assert "adjusted Rand index 0.500" in both
    assert "faiss's k-means took 0.25 of scikit-learn's time, at +1.00 % inertia" in both
    assert "k-means took 0.25 of the time of the feature pass" in both
