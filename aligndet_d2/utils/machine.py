"""A one-line description of the machine and software, for benchmark reports."""

from __future__ import annotations

import os
import platform

__all__ = ["machine_summary"]


def machine_summary() -> str:
    """CPU model, logical cores, memory, GPU (if any), Python, torch and Detectron2 versions."""
    import detectron2
    import torch

    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        mem = f", {pages * size / 2**30:.0f} GiB"
    except (ValueError, OSError):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu}, {os.cpu_count()} logical cores{mem}, {gpu}; {platform.system()} "
        f"{platform.machine()}, Python {platform.python_version()}, torch {torch.__version__}, "
        f"detectron2 {detectron2.__version__}"
    )
