#!/usr/bin/env python
"""Pre-training, fine-tuning and evaluation with LazyConfig (lazyconfig_train_net's flags).

    python train_net.py --config-file configs/pretrain_box_faster_rcnn_cpu.py
    python train_net.py --config-file configs/finetune_faster_rcnn_cpu.py \\
        train.init_checkpoint=output/aligndet_faster_rcnn_cpu.pth
    python train_net.py --config-file configs/finetune_faster_rcnn_cpu.py --eval-only \\
        train.init_checkpoint=output/finetune_faster_rcnn_cpu/model_final.pth

See `python train_net.py --help` and aligndet_d2/engine/train_loop.py.
"""

from aligndet_d2.engine.train_loop import run

if __name__ == "__main__":
    run()
