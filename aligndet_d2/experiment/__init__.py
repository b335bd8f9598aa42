"""The experiment every caller runs: proposals -> pre-train -> export -> fine-tune -> evaluate.

The demo and the benchmarks share what is here: the detector table (`detectors`), the
``train_net.py`` runner (`runner`), the stages (`stages`: proposals, export, a declared
:class:`Run`), the manifest of finished runs (`manifest`), run naming and provenance (`runs`), log
parsing (`logs`) and report writing (`reports`); each benchmark keeps only its protocol and its
report. The own-data recipe (`recipe`, `tools/recipe.py`, and the demo) runs the same stages on a
user's images."""

from .detectors import DETECTORS, Detector, get_detector
from .logs import eval_points, logged_seconds
from .manifest import Manifest
from .reports import REPORT_ONLY_HELP, RESULTS, errorbar, rewrite_report, write_report
from .runner import REPO, run_train_net, train_net_resumable
from .runs import code_version, opts_for, opts_tag
from .stages import Run, export_once, proposals_once

__all__ = [
    "DETECTORS",
    "REPO",
    "REPORT_ONLY_HELP",
    "RESULTS",
    "Run",
    "Detector",
    "Manifest",
    "code_version",
    "errorbar",
    "eval_points",
    "export_once",
    "get_detector",
    "logged_seconds",
    "opts_for",
    "opts_tag",
    "proposals_once",
    "rewrite_report",
    "run_train_net",
    "train_net_resumable",
    "write_report",
]
