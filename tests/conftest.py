import json
import os
import warnings
from pathlib import Path

import pytest

warnings.filterwarnings("ignore", category=FutureWarning)

REPO = Path(__file__).resolve().parents[1]
COCO64 = REPO / "datasets" / "coco64"
# The full coco256 set lives beside the repository on the development machines and in CI; tests that
# need it skip without it.
COCO256 = Path(os.environ.get("ALIGNDET_COCO256", REPO.parent / "shared" / "data" / "coco256"))


@pytest.fixture(scope="session")
def coco64():
    return {
        "images": str(COCO64 / "images"),
        "train": str(COCO64 / "annotations" / "train.json"),
        "val": str(COCO64 / "annotations" / "val.json"),
    }


@pytest.fixture(scope="session")
def coco256():
    if not (COCO256 / "annotations" / "train.json").exists():
        pytest.skip(f"coco256 not found at {COCO256} (set ALIGNDET_COCO256)")
    return {
        "images": str(COCO256 / "images"),
        "train": str(COCO256 / "annotations" / "train.json"),
        "val": str(COCO256 / "annotations" / "val.json"),
    }


def write_subset_json(src_json: str, dst_json: str, n: int, start: int = 0) -> dict:
    """A COCO json with images [start, start + n) of src_json (and their annotations)."""
    with open(src_json) as f:
        d = json.load(f)
    ims = d["images"][start : start + n]
    ids = {im["id"] for im in ims}
    d["images"] = ims
    d["annotations"] = [a for a in d["annotations"] if a["image_id"] in ids]
    with open(dst_json, "w") as f:
        json.dump(d, f)
    return d
