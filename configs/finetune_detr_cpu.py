# CPU-sized DETR fine-tuning on the bundled data (datasets/coco64): finetune_detr.py with the
# CPU-sized DETR (EfficientNet-Lite0 res5, 128-wide 2 + 2-layer transformer, 30 queries), the CPU
# configs' images and 2 per batch. DETR learns slowly; on this budget its AP stays low.
#
#   python train_net.py --config-file configs/finetune_detr_cpu.py \
#       train.init_checkpoint=output/aligndet_detr_cpu.pth
from detectron2.config import LazyCall as L

from aligndet_d2.modeling import EfficientNetLite

from .common.cpu import PIXEL_MEAN, PIXEL_STD, dataloader, lr_multiplier, train
from .finetune_detr import model, optimizer

# EfficientNet-Lite0's last stage (DETR has no FPN), frozen up to block 3 as the other CPU configs.
model.backbone = L(EfficientNetLite)(out_features=["res5"], freeze_at=4)
model.update(pixel_mean=PIXEL_MEAN, pixel_std=PIXEL_STD, input_format="RGB", num_queries=30)
model.transformer.update(
    d_model=128, nhead=4, num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=512
)
optimizer.lr = 1e-4  # AdamW: DETR's lr at any batch, not the SGD configs' linear scaling
train.output_dir = "output/finetune_detr_cpu"
