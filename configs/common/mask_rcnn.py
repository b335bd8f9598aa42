# Mask R-CNN R-50-FPN (Detectron2's model zoo) with the box head in the pre-training shape (4 conv +
# 1 fc, as the reference's fine-tune configs use), so that a pre-trained head transfers.
from detectron2 import model_zoo

model = model_zoo.get_config("common/models/mask_rcnn_fpn.py").model
model.roi_heads.box_head.update(conv_dims=[256] * 4, fc_dims=[1024])
