# Fine-tuning on Pascal VOC, the paper's transfer setting: finetune_retinanet.py on VOC07+12
# trainval (16 images per batch, 12k iterations, multi-scale 480-800), evaluated on VOC07 test with
# VOC's 11-point AP50, COCO-style AP and class-agnostic AP. $DETECTRON2_DATASETS holds VOC2007/ and
# VOC2012/ (see configs/common/voc.py).
#
#   python train_net.py --config-file configs/finetune_retinanet_voc.py --num-gpus 8 \
#       train.init_checkpoint=output/aligndet_retinanet.pth
from .common.voc import NUM_CLASSES
from .common.voc import paper_dataloader as dataloader
from .common.voc import paper_schedule as lr_multiplier
from .finetune_retinanet import model, optimizer, train

model.num_classes = NUM_CLASSES
model.head.num_classes = NUM_CLASSES
# 12k iterations at 16 images per batch, lr x0.1 at 9k and 11k (paper_schedule); evaluated every 4k.
train.max_iter = 12000
train.eval_period = 4000
train.checkpointer.period = 4000
train.output_dir = "output/finetune_retinanet_voc"
