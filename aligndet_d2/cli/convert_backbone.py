"""Command line: convert an image-domain ResNet checkpoint (torchvision, MoCo v2 / v3, SwAV,
DenseCL, PixPro, SimSiam, DINO) to a Detectron2 backbone checkpoint.

Example::

    python tools/convert_backbone.py --input moco_v2_800ep_pretrain.pth.tar \\
        --output output/moco_v2_r50.pkl

A ``.pkl`` loads into every detector; a ``.pth`` only into those whose ResNet sits at its
``--prefix`` (``--detector detr`` gives DETR's ``backbone.``; the default is the FPN detectors'
``backbone.bottom_up.``). The tool prints the config overrides for each detector family the file
loads into (``--detector``: that one only), and for the others how to write a file they take.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from ..checkpoint.convert import (
    CONVERTIBLE,
    FAMILIES,
    LAYOUTS,
    BackboneConversionError,
    Conversion,
    Family,
    config_overrides,
    convert_resnet,
    family_of,
    ignored_groups,
    load_backbone_checkpoint,
    write_converted,
)

__all__ = ["main"]


def _usage(conv: Conversion, output: str, prefix: Optional[str], families: List[Family]) -> str:
    """The overrides of each family of detectors, or why ``output`` does not load into it.

    Args:
        prefix: the keys' prefix of a ``.pth`` output; None for a ``.pkl``.
    """
    lines = [
        "These are torchvision-style weights (RGB, ImageNet mean / std, stride in the 3x3 conv); "
        "the configs take them with:"
    ]
    for fam in families:
        lines.append(f"{fam.name}: {', '.join(fam.detectors)}")
        if prefix is not None and prefix != fam.prefix:
            # Detectron2 loads a .pth by exact name: every key would miss this family's ResNet.
            lines.append(
                f"  not this file: its keys are under {prefix!r}, this family's ResNet under "
                f"{fam.prefix!r}; convert again with --detector {fam.detectors[0]} (or --prefix "
                f"{fam.prefix}), or write a .pkl"
            )
            continue
        for what, root in (("fine-tune", "model"), ("pre-train", "model.detector")):
            overrides = config_overrides(conv.depth, root, fam.detectors[0])
            lines.append(f"  {what}: train.init_checkpoint={output} " + " ".join(overrides))
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(
        prog="convert_backbone.py",
        description="Finds the ResNet-50 / 101 / 152 image encoder in a supervised or "
        "self-supervised checkpoint, renames its keys to Detectron2's ResNet, checks them against "
        "Detectron2's ResNet and writes it for train.init_checkpoint. Prints the keys converted, "
        "ignored and missing, and the config overrides the weights need.",
        epilog="layouts:\n"
        + "\n".join(f"  {lay.name}: {lay.covers}" for lay in LAYOUTS)
        + "\ndetector families (--detector) and where their ResNet is:\n"
        + "\n".join(f"  {', '.join(f.detectors)}: model.{f.resnet}" for f in FAMILIES),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--input", required=True, help="checkpoint (.pth, .pth.tar, .pt or .pkl)")
    p.add_argument(
        "--output",
        required=True,
        help=".pkl: Detectron2's model-zoo format, matched into any model by suffix; .pth: keys "
        "under --prefix, loaded by exact name",
    )
    p.add_argument(
        "--format",
        default="auto",
        choices=["auto"] + [lay.name for lay in LAYOUTS],
        help="the checkpoint's layout (default: detected)",
    )
    p.add_argument(
        "--detector",
        choices=CONVERTIBLE,
        help="the detector the weights are for: sets the default --prefix and prints its "
        "overrides only (default: every family's)",
    )
    p.add_argument(
        "--prefix",
        help="key prefix of a .pth output (default: the --detector's ResNet, backbone. for DETR; "
        "without --detector the FPN detectors' backbone.bottom_up.)",
    )
    p.add_argument(
        "--verbose", action="store_true", help="list every ignored key (default: grouped)"
    )
    args = p.parse_args(argv)
    families = [family_of(args.detector)] if args.detector else list(FAMILIES)
    prefix = args.prefix if args.prefix is not None else families[0].prefix
    if args.detector and args.output.endswith(".pth") and prefix != families[0].prefix:
        print(
            f"error: {args.output}: --prefix {prefix} does not fit --detector {args.detector}, "
            f"whose ResNet's keys are under {families[0].prefix}: its keys would all miss",
            file=sys.stderr,
        )
        return 1

    try:
        conv = convert_resnet(load_backbone_checkpoint(args.input), args.format)
        write_converted(conv, args.output, prefix)
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
    pth = args.output.endswith(".pth")
    print(f"wrote {args.output}" + (f" (keys under {prefix})" if pth else ""))
    print(_usage(conv, args.output, prefix if pth else None, families))
    return 0


if __name__ == "__main__":
    sys.exit(main())
