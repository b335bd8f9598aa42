# CPU-sized Faster R-CNN fine-tuning on the bundled data (datasets/coco64): EfficientNet-Lite0
# trained from its 4th block on (BatchNorm statistics frozen), 128-channel FPN, the shrunk head of
# the CPU pre-training config, short side ~320. The from-scratch baseline uses this very config with
# train.init_checkpoint="" (ImageNet backbone only).
#
#   python tools/export.py --checkpoint output/pretrain_box_faster_rcnn_cpu/model_final.pth \
#       --output output/aligndet_faster_rcnn_cpu.pth \
#       --finetune-config configs/finetune_faster_rcnn_cpu.py
#   python train_net.py --config-file configs/finetune_faster_rcnn_cpu.py \
#       train.init_checkpoint=output/aligndet_faster_rcnn_cpu.pth
from .common.cpu import cpu_finetune, lite_faster_rcnn
from .finetune_faster_rcnn import dataloader, model, optimizer, train

lite_faster_rcnn(model)
model.backbone.bottom_up.freeze_at = 4  # stem and blocks 1-3 frozen; the rest trains
lr_multiplier = cpu_finetune(dataloader, optimizer, train, paper_lr=0.02, name="faster_rcnn")
