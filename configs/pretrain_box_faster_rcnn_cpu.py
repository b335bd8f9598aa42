# CPU-sized AlignDet pre-training of Faster R-CNN: frozen EfficientNet-Lite0 (ImageNet weights from
# the package registry), 128-channel FPN, short side ~320, a shrunk head and the first 32 proposals
# per image. Defaults to the bundled data; make its proposals first:
#
#   python tools/proposals.py generate --image-root datasets/coco64/images \
#       --coco-json datasets/coco64/annotations/train.json \
#       --output output/proposals/coco64_train.json
#   python train_net.py --config-file configs/pretrain_box_faster_rcnn_cpu.py
from .common.cpu import cpu_pretrain, lite_faster_rcnn
from .pretrain_box_faster_rcnn import dataloader, lr_multiplier, model, optimizer, train

lite_faster_rcnn(model.detector)
# With few ROIs per image, keep every pseudo-GT box as a ROI so that each id has a key in the other
# view.
model.detector.roi_heads.always_keep_gt = True
# The paper's base momentum 0.996 is set for its 88716 iterations: after this config's 192 it would
# leave 68 % of the momentum detector's neck and heads at their random init; 0.97 leaves 5 % and
# gave the lower fixed-set loss on held-out train images (benchmarks/results/momentum.md). Runs
# much longer than 192 iterations want a value nearer 1 (the trainer prints the share at start).
model.base_momentum = 0.97
cpu_pretrain(
    dataloader, optimizer, train, lr_multiplier, paper_lr=0.02, max_proposals=32, name="faster_rcnn"
)
