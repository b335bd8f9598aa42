"""Large-scale jitter (Proper Reuse / Copy-Paste's LSJ, as Detectron2's new baselines): the
augmentation of configs/finetune_faster_rcnn_frozen_wide_lsj.py."""

import numpy as np
from conftest import CONFIGS
from detectron2.config import LazyConfig, instantiate
from detectron2.data import transforms as T

LSJ = "finetune_faster_rcnn_frozen_wide_lsj.py"


def test_lsj_scales_by_0_1_to_2_then_crops_or_pads_to_1024():
    cfg = LazyConfig.load(str(CONFIGS / LSJ))
    resize, crop, flip = instantiate(cfg.dataloader.train.mapper.augmentations)
    assert type(resize) is T.ResizeScale and type(crop) is T.FixedSizeCrop
    assert type(flip) is T.RandomFlip
    assert (resize.min_scale, resize.max_scale) == (0.1, 2.0)
    assert (resize.target_height, resize.target_width) == (1024, 1024)
    assert tuple(crop.crop_size) == (1024, 1024) and crop.pad  # small scales are padded to 1024
    assert flip.horizontal and not flip.vertical and flip.prob == 0.5
    # The scale drawn: the 1024 square times U(0.1, 2.0), fitted in the image's longer side.
    np.random.seed(0)
    image = np.zeros((256, 512, 3), np.uint8)  # longer side 512: factor 2 * s
    factors = [resize.get_transform(image).new_w / 512 for _ in range(500)]
    assert 0.2 <= min(factors) < 0.25 and 3.9 < max(factors) <= 4.0


def test_lsj_is_detectron2_new_baselines_and_changes_nothing_else():
    from detectron2 import model_zoo

    cfg = LazyConfig.load(str(CONFIGS / LSJ))
    zoo = model_zoo.get_config("new_baselines/mask_rcnn_R_50_FPN_100ep_LSJ.py")
    assert cfg.dataloader.train.mapper.augmentations == zoo.dataloader.train.mapper.augmentations
    # The wide config's model, schedule and test-time resize stay as they are.
    wide = LazyConfig.load(str(CONFIGS / "finetune_faster_rcnn_frozen_wide.py"))
    assert cfg.model == wide.model and cfg.optimizer == wide.optimizer
    assert cfg.lr_multiplier == wide.lr_multiplier and cfg.dataloader.test == wide.dataloader.test
    assert cfg.train.max_iter == wide.train.max_iter
    assert cfg.dataloader.train.mapper.augmentations != wide.dataloader.train.mapper.augmentations
    assert cfg.train.output_dir != wide.train.output_dir
