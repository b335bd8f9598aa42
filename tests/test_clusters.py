"""Cluster pseudo-labels of proposals (DETR pre-training's classes)."""

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import COCO64, CONFIGS, REPO, load_benchmark, write_subset_json

from aligndet_d2.cli.cluster_proposals import main as cluster_main
from aligndet_d2.data import clusters
from aligndet_d2.data.clusters import (
    ClusterError,
    ClusterSettings,
    cluster_features,
    cluster_proposals,
    proposal_features,
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


def _json_of(path, file_names):
    """A json of the coco64 train images named (in that order) and their boxes as proposals."""
    with open(COCO64 / "annotations" / "train.json") as f:
        d = json.load(f)
    by_name = {im["file_name"]: im for im in d["images"]}
    d["images"] = [by_name[n] for n in file_names]
    ids = {im["id"] for im in d["images"]}
    d["annotations"] = [a for a in d["annotations"] if a["image_id"] in ids]
    with open(path, "w") as f:
        json.dump(d, f)
    return str(path)


def _by_annotation(json_file, features, rows):
    """{annotation id: feature row}."""
    annotations = json.loads(open(json_file).read())["annotations"]
    return {annotations[r]["id"]: f for r, f in zip(rows, features)}


def _save_checkpoint(net, path, stem=None):
    """A Detectron2 checkpoint of ``net``'s image network under the detector's names; ``stem``: a
    value its stem's conv weights are all set to (NaN: a broken checkpoint)."""
    state = {f"backbone.bottom_up.{k}": v.clone() for k, v in net.state_dict().items()}
    if stem is not None:
        state["backbone.bottom_up.stem.0.weight"].fill_(stem)
    torch.save({"model": state}, path)
    return str(path)


# 000000000071 and 000000000030 are landscape (both pad to 128 x 192 at SMALL's sizes), 072 is
# portrait (192 x 128): a batch of the three would pad all to 192 x 192.
IMAGES = ["000000000071.jpg", "000000000072.jpg", "000000000030.jpg"]


def test_features_do_not_depend_on_the_batch(tmp_path, monkeypatch):
    json_file = _json_of(tmp_path / "p.json", IMAGES)
    root = str(COCO64 / "images")
    alone = proposal_features(json_file, root, CONFIG, SMALL, batch_size=1)
    forwards = []
    call = clusters._Backbone.__call__

    def spy(self, images, boxes, roi_size):
        forwards.append(len(images))
        return call(self, images, boxes, roi_size)

    monkeypatch.setattr(clusters._Backbone, "__call__", spy)
    batched = proposal_features(json_file, root, CONFIG, SMALL, batch_size=3)
    a = _by_annotation(json_file, *alone[:2])
    b = _by_annotation(json_file, *batched[:2])
    for i in a:
        np.testing.assert_allclose(b[i], a[i], rtol=1e-5, atol=1e-5, err_msg=f"annotation {i}")
    assert batched[1] == alone[1]  # json order, whatever the batches
    # The two landscape images still share a forward: batch_size keeps its use.
    assert sorted(forwards) == [1, 2]


def test_cache_refuses_an_edited_json_or_another_image_folder(tmp_path):
    json_file = _json_of(tmp_path / "p.json", IMAGES[:1])
    root = str(COCO64 / "images")
    cache = tmp_path / "cache"
    settings = replace(SMALL, max_proposals=2)
    proposal_features(json_file, root, CONFIG, settings, cache_dir=str(cache))
    # The same size, another box: the first digit of the first box's x.
    text = open(json_file).read()
    at = text.index('"bbox": [') + len('"bbox": [')
    edited = text[:at] + ("1" if text[at] != "1" else "2") + text[at + 1 :]
    assert len(edited) == len(text) and edited != text
    with open(json_file, "w") as f:
        f.write(edited)
    with pytest.raises(ClusterError, match=r"holds features of another .*differing: json_sha256"):
        proposal_features(json_file, root, CONFIG, settings, cache_dir=str(cache))
    with open(json_file, "w") as f:
        f.write(text)
    # The same images in another folder (it could hold other files of the same names).
    other = tmp_path / "images"
    other.mkdir()
    shutil.copy(COCO64 / "images" / IMAGES[0], other)
    with pytest.raises(ClusterError, match=r"holds features of another .*differing: image_root"):
        proposal_features(json_file, str(other), CONFIG, settings, cache_dir=str(cache))
    # A cache of the tool before its inputs were recorded.
    (cache / "run.json").write_text(json.dumps({"run_key": "0" * 64, "json_file": json_file}))
    with pytest.raises(ClusterError, match=r"holds features of another .*older cache format"):
        proposal_features(json_file, root, CONFIG, settings, cache_dir=str(cache))


def test_non_finite_features_name_the_image_and_the_checkpoint(tmp_path, capsys):
    json_file = _json_of(tmp_path / "p.json", IMAGES[:2])
    net = clusters._Backbone(CONFIG, [], "cpu").net
    ckpt = _save_checkpoint(net, tmp_path / "nan.pth", stem=float("nan"))
    out, cache = tmp_path / "k.json", tmp_path / "cache"
    argv = ["--json", json_file, "--image-root", str(COCO64 / "images"), "--config-file", CONFIG]
    argv += ["--output", str(out), "--num-clusters", "2", "--max-proposals", "2"]
    argv += ["--short-edge", "128", "--max-size", "192", "--cache-dir", str(cache)]
    assert cluster_main([*argv, f"train.init_checkpoint={ckpt}"]) == 1
    err = capsys.readouterr().err
    assert "error: " in err and "non-finite (NaN or inf) features" in err, err[-2000:]
    assert str(COCO64 / "images" / IMAGES[0]) in err and f"checkpoint {ckpt}" in err
    assert "Traceback" not in err and not out.exists()
    # The checkpoint mended in place: the failed run left no shard, its cache folder is reused.
    _save_checkpoint(net, ckpt)
    settings = replace(SMALL, max_proposals=2)
    opts = [f"train.init_checkpoint={ckpt}"]
    feats, _, _ = proposal_features(
        json_file, str(COCO64 / "images"), CONFIG, settings, opts=opts, cache_dir=str(cache)
    )
    assert np.isfinite(feats).all()


def test_boxes_are_scaled_to_the_resized_image_before_roi_align(tmp_path):
    from torchvision.ops import roi_align

    name = IMAGES[0]  # 426 x 640, 16 boxes
    json_file = _json_of(tmp_path / "p.json", [name])
    settings = replace(SMALL, max_proposals=8, short_edge=256, max_size=384)
    feats, rows, info = proposal_features(json_file, str(COCO64 / "images"), CONFIG, settings)
    assert info["feature"] == "res5" and info["stride"] == 32
    d = json.loads(open(json_file).read())
    h, w = d["images"][0]["height"], d["images"][0]["width"]
    net = clusters._Backbone(CONFIG, [], "cpu")
    image, _ = clusters._load_image(str(COCO64 / "images" / name), "RGB", 256, 384)
    assert image.shape[1:] == (256, 384)
    with torch.no_grad():  # 256 x 384: multiples of 32, no padding
        fmap = net.net(((image.float() - net.mean) / net.std)[None])["res5"]
    xywh = torch.tensor([d["annotations"][r]["bbox"] for r in rows])
    xyxy = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1)

    def expected(boxes, spatial_scale=1 / 32):
        r = roi_align(fmap, [boxes], 7, spatial_scale=spatial_scale, sampling_ratio=2, aligned=True)
        return r.mean(dim=(2, 3)).numpy()

    resize = torch.tensor([384 / w, 256 / h] * 2)
    right = expected(xyxy * resize)
    np.testing.assert_allclose(feats, right, rtol=1e-4, atol=1e-5)
    # The image content makes each slip measurable, so the comparison above pins the scaling.
    for wrong in (expected(xyxy), expected(xyxy * resize**2), expected(xyxy * resize, 1 / 16)):
        assert np.abs(wrong - right).max() > 0.05 * np.abs(right).max()


def test_the_cache_key_holds_what_the_features_depend_on(tmp_path):
    json_file = _json_of(tmp_path / "p.json", IMAGES[:2])
    root = str(COCO64 / "images")
    base = clusters._Backbone(CONFIG, [], "cpu")

    def key(json_file=json_file, root=root, backbone=base.key, **settings):
        inputs = clusters._feature_inputs(json_file, root, backbone, replace(SMALL, **settings))
        return clusters._run_key(inputs)

    k = key()
    # Another K, PCA size, seed or k-means restarts cluster the same features.
    for field, value in [("num_clusters", 3), ("pca_dim", 4), ("seed", 7), ("kmeans_init", 1)]:
        assert key(**{field: value}) == k, field
    # The json's content counts, not its path.
    copy = tmp_path / "copy.json"
    shutil.copy(json_file, copy)
    assert key(json_file=str(copy)) == k

    detr = clusters._Backbone(str(CONFIGS / "pretrain_box_detr_cpu.py"), [], "cpu")
    std = clusters._Backbone(CONFIG, ["model.detector.pixel_std=[64,64,64]"], "cpu")
    # The same checkpoint path twice, other weights the second time (another training's).
    ckpt = tmp_path / "model.pth"
    _save_checkpoint(base.net, ckpt)
    first = clusters._Backbone(CONFIG, [f"train.init_checkpoint={ckpt}"], "cpu")
    _save_checkpoint(base.net, ckpt, stem=0.5)
    second = clusters._Backbone(CONFIG, [f"train.init_checkpoint={ckpt}"], "cpu")
    assert {n for n in first.key if first.key[n] != second.key[n]} == {"weights_sha256"}
    changed = {
        "max_proposals": key(max_proposals=5),
        "short_edge": key(short_edge=160),
        "max_size": key(max_size=224),
        "roi_size": key(roi_size=5),
        "json": key(json_file=_json_of(tmp_path / "other.json", IMAGES[1:])),
        "image_root": key(root=str(tmp_path)),
        "config": key(backbone=detr.key),
        "opts": key(backbone=std.key),
        "checkpoint": key(backbone=first.key),
        "weights": key(backbone=second.key),
    }
    assert [n for n, v in changed.items() if v == k] == []
    assert len(set(changed.values())) == len(changed)


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
