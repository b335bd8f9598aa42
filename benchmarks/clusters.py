#!/usr/bin/env python
"""Cluster pseudo-labels on the VOC pool: scikit-learn's PCA and k-means against faiss's.

tools/cluster_proposals.py uses scikit-learn. This measures, on the RoIAlign features of the VOC
pool's proposals (the first 20 per image, pretrain_box_detr_cpu.py's backbone and sizes, as the VOC
harness's DETR runs cluster them; computed once and cached beside the json, where those runs find
them too), the wall time of PCA to 256-d and of k-means with K clusters in each library, the
k-means inertia of each in the same PCA space, and how much the two partitions agree (adjusted
Rand index). Run it alone on the machine.

    pip install faiss-cpu   # requirements/benchmark.txt
    python benchmarks/clusters.py
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from aligndet_d2.experiment import (
    REPORT_ONLY_HELP,
    RESULTS,
    get_detector,
    rewrite_report,
    write_report,
)


def _sklearn(x, k, dim, seed, n_init):
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    t = time.perf_counter()
    z = PCA(n_components=dim, random_state=seed).fit_transform(x)
    t_pca = time.perf_counter() - t
    t = time.perf_counter()
    km = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(z)
    return z, km.labels_, t_pca, time.perf_counter() - t


def _faiss(x, z, k, dim, seed, n_init):
    import faiss

    t = time.perf_counter()
    pca = faiss.PCAMatrix(x.shape[1], dim)
    pca.train(x)
    pca.apply(x)
    t_pca = time.perf_counter() - t
    t = time.perf_counter()
    # On the scikit-learn PCA output, so that both k-means see the same points.
    km = faiss.Kmeans(z.shape[1], k, niter=300, nredo=n_init, seed=seed)
    km.train(np.ascontiguousarray(z, dtype=np.float32))
    _, labels = km.index.search(np.ascontiguousarray(z, dtype=np.float32), 1)
    return labels[:, 0], t_pca, time.perf_counter() - t


def _inertia(z, labels):
    return float(
        sum(((z[labels == c] - z[labels == c].mean(0)) ** 2).sum() for c in np.unique(labels))
    )


def markdown(r) -> str:
    lines = [
        "# Cluster pseudo-labels: scikit-learn against faiss",
        "",
        f"Machine: {r['machine']}. Date: {r['date']}.",
        "",
        f"Command: `{r['command']}`",
        "",
        f"{r['num_proposals']} proposals of {r['json']} ({r['feature_dim']}-d RoI features of "
        f"{r['config']}'s backbone, {r['feature_seconds']:.0f} s to compute), "
        f"PCA to {r['pca_dim']}, k-means with K = {r['num_clusters']}, {r['n_init']} restarts, "
        f"seed {r['seed']}.",
        "",
        "| library | PCA s | k-means s | inertia (same PCA space) |",
        "|---|---|---|---|",
    ]
    for name in ("sklearn", "faiss"):
        if name in r:
            v = r[name]
            lines.append(
                f"| {name} | {v['pca_seconds']:.1f} | {v['kmeans_seconds']:.1f} | "
                f"{v['inertia']:.4g} |"
            )
    if "adjusted_rand" in r:
        s, f = r["sklearn"], r["faiss"]
        lines += [
            "",
            f"Agreement of the two partitions: adjusted Rand index {r['adjusted_rand']:.3f}.",
            "",
            f"faiss's k-means took {f['kmeans_seconds'] / s['kmeans_seconds']:.2f} of "
            f"scikit-learn's time, at {100 * (f['inertia'] / s['inertia'] - 1):+.2f} % inertia. "
            "tools/cluster_proposals.py uses scikit-learn, which needs no extra dependency: its "
            f"k-means took {s['kmeans_seconds'] / r['feature_seconds']:.2f} of the time of the "
            "feature pass it follows, and clustering runs once before a pre-training.",
        ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    from aligndet_d2.data.clusters import ClusterSettings, proposal_features
    from aligndet_d2.utils.machine import machine_summary

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--json",
        default="/root/.cache/aligndet_bench_low_data/proposals/pool_soco.json",
        help="proposals json (the VOC harness's pool proposals)",
    )
    p.add_argument("--image-root", default="../shared/data/voc2007/VOC2007/JPEGImages")
    p.add_argument("--config-file", default=get_detector("detr").config("pretrain", "cpu"))
    p.add_argument("--num-clusters", type=int, default=256)
    p.add_argument(
        "--cache-dir",
        default="",
        help="feature shards (default: <json>.features, where the VOC harness keeps them)",
    )
    p.add_argument("--out", default=str(RESULTS / "clusters"))
    p.add_argument("--report-only", action="store_true", help=REPORT_ONLY_HELP)
    args = p.parse_args(argv)
    if args.report_only:
        rewrite_report(Path(args.out), markdown)
        return 0

    settings = ClusterSettings(
        num_clusters=args.num_clusters, **get_detector("detr").cluster_settings
    )
    t = time.perf_counter()
    x, _, info = proposal_features(
        args.json,
        args.image_root,
        args.config_file,
        settings,
        cache_dir=args.cache_dir or args.json + ".features",
        progress=lambda d, n: print(f"  features: {d}/{n} images", flush=True),
    )
    report = {
        "machine": machine_summary(),
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join(["python benchmarks/clusters.py", *sys.argv[1:]]),
        "json": args.json,
        "config": args.config_file,
        "num_proposals": int(len(x)),
        "feature_dim": int(x.shape[1]),
        "feature_seconds": time.perf_counter() - t,
        "pca_dim": min(settings.pca_dim, *x.shape),
        "num_clusters": args.num_clusters,
        "n_init": settings.kmeans_init,
        "seed": settings.seed,
    }
    dim = report["pca_dim"]
    z, labels, t_pca, t_km = _sklearn(
        x, args.num_clusters, dim, settings.seed, settings.kmeans_init
    )
    report["sklearn"] = {
        "pca_seconds": t_pca,
        "kmeans_seconds": t_km,
        "inertia": _inertia(z, labels),
    }
    try:
        import faiss  # noqa: F401
    except ImportError:
        print("faiss is not installed (pip install faiss-cpu): scikit-learn only")
    else:
        from sklearn.metrics import adjusted_rand_score

        f_labels, f_pca, f_km = _faiss(
            x, z, args.num_clusters, dim, settings.seed, settings.kmeans_init
        )
        report["faiss"] = {
            "pca_seconds": f_pca,
            "kmeans_seconds": f_km,
            "inertia": _inertia(z, f_labels),
        }
        report["adjusted_rand"] = float(adjusted_rand_score(labels, f_labels))
    write_report(report, Path(args.out), markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
