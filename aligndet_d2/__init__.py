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
