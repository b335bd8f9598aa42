# Faster R-CNN R-50-FPN: the Mask R-CNN of mask_rcnn.py without its mask parts (the model zoo has no
# Faster R-CNN .py config); the box head has the pre-training shape (4 conv + 1 fc).
from .mask_rcnn import model

model.roi_heads.update(mask_in_features=None, mask_pooler=None, mask_head=None)
