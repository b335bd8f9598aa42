"""The experiment every caller runs: proposals -> pre-train -> export -> fine-tune -> evaluate.

The demo and the benchmarks share what is here: the detector table (`detectors`), the
``train_net.py`` runner (`runner`), run naming and provenance (`runs`), log parsing (`logs`) and
report writing (`reports`); each benchmark keeps only its protocol and its report.
"""

from .detectors import DETECTORS, Detector, get_detector
from .logs import eval_points, logged_seconds
from .reports import RESULTS, errorbar, write_report
from .runner import REPO, run_train_net, train_net_resumable
from .runs import code_version, opts_for, opts_tag

__all__ = [
    "DETECTORS",
    "REPO",
    "RESULTS",
    "Detector",
    "code_version",
    "errorbar",
    "eval_points",
    "get_detector",
    "logged_seconds",
    "opts_for",
    "opts_tag",
    "run_train_net",
    "train_net_resumable",
    "write_report",
]
