"""Command line: convert an image-domain ResNet checkpoint (torchvision, MoCo v2 / v3, SwAV,
DenseCL, PixPro, SimSiam, DINO) to a Detectron2 backbone checkpoint.

Example::

    python tools/convert_backbone.py --input moco_v2_800ep_pretrain.pth.tar \\
        --output output/moco_v2_r50.pkl
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from ..checkpoint.convert import (
    LAYOUTS,
    BackboneConversionError,
    config_overrides,
    convert_resnet,
    ignored_groups,
    load_backbone_checkpoint,
    write_converted,
)

__all__ = ["main"]


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(
        prog="convert_backbone.py",
        description="Finds the ResNet-50 / 101 / 152 image encoder in a supervised or "
        "self-supervised checkpoint, renames its keys to Detectron2's ResNet, checks them against "
        "Detectron2's ResNet and writes it for train.init_checkpoint. Prints the keys converted, "
        "ignored and missing, and the config overrides the weights need.",
        epilog="layouts:\n" + "\n".join(f"  {lay.name}: {lay.covers}" for lay in LAYOUTS),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--input", required=True, help="checkpoint (.pth, .pth.tar, .pt or .pkl)")
    p.add_argument(
        "--output",
        required=True,
        help=".pkl: Detectron2's model-zoo format, matched into any model by suffix (use this "
        "for pre-training); .pth: keys under --prefix",
    )
    p.add_argument(
        "--format",
        default="auto",
        choices=["auto"] + [lay.name for lay in LAYOUTS],
        help="the checkpoint's layout (default: detected)",
    )
    p.add_argument(
        "--prefix",
        default="backbone.bottom_up.",
        help="key prefix of a .pth output (default: an FPN model's backbone.bottom_up.)",
    )
    p.add_argument(
        "--verbose", action="store_true", help="list every ignored key (default: grouped)"
    )
    args = p.parse_args(argv)

    try:
        conv = convert_resnet(load_backbone_checkpoint(args.input), args.format)
        write_converted(conv, args.output, args.prefix)
    except (BackboneConversionError, FileNotFoundError, ValueError) as e:
        print(f"error: {args.input}: {e}", file=sys.stderr)
        return 1
    print(
        f"{args.input}: {conv.layout.name} layout, ResNet-{conv.depth}\n"
        f"  converted: {len(conv.converted)} keys (all {len(conv.state)} of Detectron2's "
        f"ResNet-{conv.depth}; missing: 0)\n"
        f"  ignored:   {len(conv.ignored)} keys (classifier, heads, momentum encoders, queues, "
        "BN step counters)"
    )
    for group, n in ignored_groups(conv):
        print(f"    {group}: {n}")
    if args.verbose:
        print("\n".join(f"    {k}" for k in conv.ignored))
    print(f"wrote {args.output}")
    print(
        "These are torchvision-style weights (RGB, ImageNet mean / std, stride in the 3x3 conv).\n"
        f"Fine-tune with:\n  train.init_checkpoint={args.output} "
        + " ".join(config_overrides(conv.depth))
        + f"\nPre-train with:\n  train.init_checkpoint={args.output} "
        + " ".join(config_overrides(conv.depth, "model.detector"))
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
