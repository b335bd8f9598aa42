# CPU-sized RetinaNet fine-tuning on the bundled data (datasets/coco64): EfficientNet-Lite0 trained
# from its 4th block on (BatchNorm statistics frozen), the CPU pre-training shapes (128-channel FPN,
# P3-P7, two-conv towers), short side ~320. The from-scratch baseline is this very config with
# train.init_checkpoint="".
#
#   python tools/export.py --checkpoint output/pretrain_box_retinanet_cpu/model_final.pth \
#       --output output/aligndet_retinanet_cpu.pth \
#       --finetune-config configs/finetune_retinanet_cpu.py
#   python train_net.py --config-file configs/finetune_retinanet_cpu.py \
#       train.init_checkpoint=output/aligndet_retinanet_cpu.pth
from .common.cpu import cpu_finetune, lite_dense
from .finetune_retinanet import dataloader, model, optimizer, train

lite_dense(model)
model.backbone.bottom_up.freeze_at = 4  # stem and blocks 1-3 frozen; the rest trains
lr_multiplier = cpu_finetune(dataloader, optimizer, train, paper_lr=0.01, name="retinanet")
