# CPU-sized AlignDet pre-training of RetinaNet: frozen EfficientNet-Lite0, 128-channel FPN (P3-P7),
# two-conv towers, short side ~320, the first 50 proposals per image. Defaults to the bundled data;
# make its proposals first (see pretrain_box_faster_rcnn_cpu.py), then:
#
#   python train_net.py --config-file configs/pretrain_box_retinanet_cpu.py
from .common.cpu import cpu_pretrain, lite_dense
from .pretrain_box_retinanet import dataloader, lr_multiplier, model, optimizer, train

lite_dense(model.detector)
# The paper's base momentum 0.996 is set for its 88716 iterations: after this config's 192 it would
# leave 68 % of the momentum detector's neck and heads at their random init; 0.97 leaves 5 % and
# gave the lower fixed-set loss on held-out train images (benchmarks/results/momentum.md). Runs
# much longer than 192 iterations want a value nearer 1 (the trainer prints the share at start).
model.base_momentum = 0.97
cpu_pretrain(
    dataloader, optimizer, train, lr_multiplier, paper_lr=0.01, max_proposals=50, name="retinanet"
)
