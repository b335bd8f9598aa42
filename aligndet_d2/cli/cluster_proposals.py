"""Command line: cluster pseudo-labels of a proposals json, for DETR pre-training.

Example (the VOC pool, the CPU DETR pre-training's backbone)::

    python tools/cluster_proposals.py --json output/proposals/voc_pool.json \\
        --image-root ../shared/data/voc2007/VOC2007/JPEGImages \\
        --config-file configs/pretrain_box_detr_cpu.py --output output/proposals/voc_pool_k256.json
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from ..data.clusters import ClusterError, ClusterSettings, cluster_proposals
from ..data.proposals import ProposalsError

__all__ = ["main"]


def main(argv: Optional[List[str]] = None) -> int:
    d = ClusterSettings()
    p = argparse.ArgumentParser(
        prog="cluster_proposals.py",
        description="RoIAlign features of each proposal from a config's frozen backbone, PCA and "
        "k-means (scikit-learn): writes the proposals json again with categories cluster_1 .. "
        "cluster_K, the settings and cluster sizes in info. Resumable with --cache-dir.",
    )
    p.add_argument("--json", required=True, help="proposals json (tools/proposals.py generate)")
    p.add_argument("--image-root", required=True, help="folder of its images")
    p.add_argument(
        "--config-file",
        required=True,
        help="config whose backbone and train.init_checkpoint describe the proposals: the "
        "pre-training config that will read the output",
    )
    p.add_argument("--output", required=True, help="clustered proposals json to write")
    p.add_argument(
        "--num-clusters", type=int, default=d.num_clusters, help="K (default %(default)s)"
    )
    p.add_argument("--pca-dim", type=int, default=d.pca_dim, help="default %(default)s")
    p.add_argument(
        "--max-proposals",
        type=int,
        default=d.max_proposals,
        help="first k proposals per image, as pre-training reads them; only these are written "
        "(default %(default)s; 0: all)",
    )
    p.add_argument("--short-edge", type=int, default=d.short_edge, help="default %(default)s")
    p.add_argument("--max-size", type=int, default=d.max_size, help="default %(default)s")
    p.add_argument("--seed", type=int, default=d.seed, help="PCA and k-means seed")
    p.add_argument(
        "--cache-dir",
        help="folder for finished feature shards (resume; another K, PCA size or seed reuses "
        "them; after an edit of the json, or another image root, backbone, checkpoint or "
        "feature setting, they are refused); default: <output>.features",
    )
    p.add_argument("--device", default="cpu", help="torch device of the backbone")
    p.add_argument(
        "--batch-size",
        type=int,
        default=4,
        help="images per forward, at most: only images of the same padded size run together, so "
        "that the features do not depend on the batch (default %(default)s)",
    )
    p.add_argument("opts", nargs=argparse.REMAINDER, help="key=value overrides of the config")
    args = p.parse_args(argv)

    from tqdm import tqdm

    bars = []

    def progress(done, total):
        # The bar opens when the features start (called with done=0): opened earlier, the model's
        # build logs would break it and it would print a second line at its end.
        if not bars:
            bars.append(tqdm(total=total, unit="img", desc="proposal features", dynamic_ncols=True))
        bars[0].update(done - bars[0].n)

    def close_bar():
        for bar in bars:
            bar.close()

    try:
        settings = ClusterSettings(
            num_clusters=args.num_clusters,
            pca_dim=args.pca_dim,
            max_proposals=args.max_proposals or None,
            short_edge=args.short_edge,
            max_size=args.max_size,
            seed=args.seed,
        )
        info = cluster_proposals(
            args.json,
            args.image_root,
            args.config_file,
            args.output,
            settings,
            opts=args.opts,
            cache_dir=args.cache_dir or f"{args.output}.features",
            device=args.device,
            batch_size=args.batch_size,
            progress=progress,
        )
    except (ClusterError, ProposalsError) as e:
        close_bar()
        print(f"error: {e}", file=sys.stderr)
        return 1
    close_bar()
    sizes = sorted(info["sizes"])
    print(
        f"wrote {args.output}: {info['num_proposals']} proposals in {len(sizes)} clusters "
        f"(sizes {sizes[0]}-{sizes[-1]}, median {sizes[len(sizes) // 2]}, "
        f"{info['empty_clusters']} empty); {info['feature']} features ({info['channels']}-d) -> "
        f"PCA {info['pca_dim']}-d ({100 * info['pca_explained_variance']:.0f} % of the variance); "
        f"{info['seconds']['features']:.0f} s features, {info['seconds']['clustering']:.0f} s "
        "clustering"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
