# CPU-sized DETR fine-tuning on the bundled data (datasets/coco64): finetune_detr.py with the
# lite_detr model (EfficientNet-Lite0 res5, 128-wide 2 + 2-layer transformer, 30 queries), the CPU
# configs' images and 2 per batch. DETR learns slowly; on this budget its AP stays low.
#
#   python train_net.py --config-file configs/finetune_detr_cpu.py \
#       train.init_checkpoint=output/aligndet_detr_cpu.pth
from .common.cpu import cpu_finetune
from .common.detr import lite_detr
from .finetune_detr import dataloader, model, optimizer, train

lite_detr(model)
lr_multiplier = cpu_finetune(dataloader, optimizer, train, paper_lr=1e-4, name="detr")
optimizer.lr = 1e-4  # AdamW: DETR's lr at any batch, not the SGD configs' linear scaling
