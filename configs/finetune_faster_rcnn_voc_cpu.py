# CPU-sized fine-tuning on VOC 2007: finetune_faster_rcnn_cpu.py on a low-data split of VOC `train`
# (default the 10 % split of seed 1: tools/low_data_splits.py), evaluated on VOC `val` with VOC's
# 11-point AP50, COCO-style AP and class-agnostic AP. $DETECTRON2_DATASETS holds voc2007/ (a link
# to ../shared/data/voc2007) and voc2007_splits/ (see configs/common/voc.py).
#
#   python train_net.py --config-file configs/finetune_faster_rcnn_voc_cpu.py \
#       train.init_checkpoint=output/aligndet_faster_rcnn_cpu.pth
from .common.voc import NUM_CLASSES
from .common.voc import cpu_dataloader as dataloader
from .finetune_faster_rcnn_cpu import lr_multiplier, model, optimizer, train

model.roi_heads.num_classes = NUM_CLASSES
# 12 epochs of the 250 labeled images of a 10 % split at 2 per batch: 250 * 12 / 2 = 1500
# iterations (the schedule's steps follow); evaluated at 1/3, 2/3 and the end.
train.max_iter = 1500
train.eval_period = 500
train.checkpointer.period = 500
train.output_dir = "output/finetune_faster_rcnn_voc_cpu"
