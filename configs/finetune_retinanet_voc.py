# Fine-tuning on Pascal VOC, the paper's transfer setting: finetune_retinanet.py on VOC07+12
# trainval (16 images per batch, 12k iterations, multi-scale 480-800), evaluated on VOC07 test with
# VOC's 11-point AP50, COCO-style AP and class-agnostic AP. $DETECTRON2_DATASETS holds VOC2007/ and
# VOC2012/ (see configs/common/voc.py).
#
#   python train_net.py --config-file configs/finetune_retinanet_voc.py --num-gpus 8 \
#       train.init_checkpoint=output/aligndet_retinanet.pth
from .common.voc import voc_classes, voc_paper
from .finetune_retinanet import dataloader, model, optimizer, train

voc_classes(model)
lr_multiplier = voc_paper(dataloader, train)
train.output_dir = "output/finetune_retinanet_voc"
