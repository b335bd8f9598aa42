# CPU-sized AlignDet pre-training of RetinaNet: frozen EfficientNet-Lite0, 128-channel FPN (P3-P7),
# two-conv towers, short side ~320, the first 50 proposals per image. Defaults to the bundled data;
# make its proposals first (see pretrain_box_faster_rcnn_cpu.py), then:
#
#   python train_net.py --config-file configs/pretrain_box_retinanet_cpu.py
from .common.cpu import cpu_pretrain, lite_dense
from .pretrain_box_retinanet import dataloader, lr_multiplier, model, optimizer, train

lite_dense(model.detector)
cpu_pretrain(
    dataloader, optimizer, train, lr_multiplier, paper_lr=0.01, max_proposals=50, name="retinanet"
)
