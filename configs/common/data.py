# Data loaders shared by the configs: COCO 2017 for fine-tuning and evaluation (Detectron2's model
# zoo loader, both evaluators), proposals + two views for pre-training.
from detectron2 import model_zoo
from detectron2.config import LazyCall as L
from detectron2.data import build_detection_train_loader
from detectron2.data import transforms as T
from detectron2.evaluation import COCOEvaluator, DatasetEvaluators
from omegaconf import OmegaConf

from aligndet_d2.data import TwoViewMapper, load_proposals_json
from aligndet_d2.evaluation import ClassAgnosticCOCOEvaluator, FrequencyCOCOEvaluator

# Fine-tuning: COCO instances, no masks; 80-class and class-agnostic AP.
finetune = model_zoo.get_config("common/data/coco.py").dataloader
finetune.train.mapper.use_instance_mask = False
finetune.evaluator = L(DatasetEvaluators)(
    evaluators=[
        L(COCOEvaluator)(dataset_name="${....test.dataset.names}", tasks=("bbox",)),
        L(ClassAgnosticCOCOEvaluator)(dataset_name="${....test.dataset.names}"),
    ]
)
# AP by the number of training images that contain each class (LVIS's rare / common / frequent
# bins), an evaluator to add where the train dataset is a COCO json declared with L(register_coco).
frequency_evaluator = L(FrequencyCOCOEvaluator)(
    dataset_name="${....test.dataset.names}", train_json="${....train.dataset.names.json_file}"
)


def lsj_augmentations(*, image_size: int) -> list:
    """Detectron2's new_baselines large-scale jitter (an option of Proper Reuse's recipe), for a
    fine-tune loader's ``train.mapper.augmentations``: resize to 0.1-2.0x of an ``image_size``
    square, crop or pad to it, flip."""
    return [
        L(T.ResizeScale)(
            min_scale=0.1, max_scale=2.0, target_height=image_size, target_width=image_size
        ),
        L(T.FixedSizeCrop)(crop_size=(image_size, image_size)),
        L(T.RandomFlip)(horizontal=True),
    ]


# Pre-training: a proposals json (tools/proposals.py generate) over the unlabeled train images.
pretrain = OmegaConf.create()
pretrain.train = L(build_detection_train_loader)(
    dataset=L(load_proposals_json)(
        json_file="datasets/coco/proposals/train2017_soco.json",
        image_root="datasets/coco/train2017",
    ),
    mapper=L(TwoViewMapper)(
        short_edge_lengths=(640, 672, 704, 736, 768, 800),
        max_size=1333,
        image_format="BGR",
        max_proposals=None,
    ),
    total_batch_size=16,
    num_workers=4,
)
