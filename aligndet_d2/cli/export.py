"""Command line: export a pre-training checkpoint to a plain Detectron2 checkpoint for fine-tuning.

Example::

    python tools/export.py --checkpoint output/pretrain_box_faster_rcnn_cpu/model_final.pth \\
        --output output/aligndet_faster_rcnn_cpu.pth \\
        --finetune-config configs/finetune_faster_rcnn_cpu.py
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from ..checkpoint.export import (
    ExportMismatchError,
    check_report,
    export_state_dict,
    format_report,
    key_report,
    load_checkpoint_file,
    write_export,
)

__all__ = ["main"]


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(
        prog="export.py",
        description="Writes the online detector of a pre-training checkpoint as a plain Detectron2 "
        "checkpoint: projection layers removed, the RPN kept whole unless --drop-rpn, the last "
        "box-regression layers dropped unless --keep-box-regression.",
    )
    p.add_argument("--checkpoint", required=True, help="pre-training checkpoint (model_*.pth)")
    p.add_argument("--output", required=True, help="exported checkpoint to write (.pth)")
    p.add_argument(
        "--keep-box-regression",
        action="store_true",
        help="keep the last box-regression layers (R-CNN box_predictor.bbox_pred, dense "
        "head.bbox_pred / head.ctrness). The R-CNN one is class-agnostic: fine-tune with "
        "model.roi_heads.box_predictor.cls_agnostic_bbox_reg=True. Default: dropped, as the "
        "reference does",
    )
    p.add_argument(
        "--drop-rpn",
        action="store_true",
        help="drop the RPN too: it then starts from random init in fine-tuning (an ablation; "
        "pre-training teaches it to propose selective-search-like boxes). Default: kept",
    )
    p.add_argument(
        "--finetune-config",
        help="fine-tune config to check the export against: prints the per-module key table and "
        "stops with an error, writing nothing, when the weights do not fit it",
    )
    p.add_argument(
        "opts", nargs=argparse.REMAINDER, help="key=value overrides of the fine-tune config"
    )
    args = p.parse_args(argv)

    try:
        ckpt = load_checkpoint_file(args.checkpoint)
        state, dropped = export_state_dict(ckpt["model"], args.keep_box_regression, args.drop_rpn)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {args.checkpoint}: {e}", file=sys.stderr)
        return 1
    print(
        f"{args.checkpoint}: iteration {ckpt.get('iteration')}, {len(state)} keys exported, "
        f"{len(dropped)} dropped"
    )
    if args.finetune_config:
        from detectron2.config import LazyConfig, instantiate

        cfg = LazyConfig.apply_overrides(LazyConfig.load(args.finetune_config), args.opts)
        model = instantiate(cfg.model)
        report = key_report(state, model.state_dict(), dropped)
        print(f"\nloaded into {args.finetune_config}:\n" + format_report(report))
        try:
            check_report(report)
        except ExportMismatchError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    write_export(
        state,
        dropped,
        args.output,
        source=args.checkpoint,
        iteration=ckpt.get("iteration"),
        keep_box_regression=args.keep_box_regression,
        drop_rpn=args.drop_rpn,
    )
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
