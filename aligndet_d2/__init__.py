"""aligndet_d2: AlignDet box-domain pre-training for Detectron2 detectors."""

__version__ = "0.1.0"

try:
    import detectron2  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "aligndet_d2 needs Detectron2, which is not on the package registry under its own name. "
        "Run `bash scripts/setup_env.sh` from the repository (it installs Detectron2's code into "
        ".venv), or install Detectron2 from source yourself."
    ) from e

from .model_zoo import get_config, get_config_file  # noqa: E402 (after the Detectron2 check)

__all__ = ["get_config", "get_config_file"]
