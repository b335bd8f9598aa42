"""Every config resolves to the settings committed in tests/data/config_dumps.json.

A config refactor that moves a setting (from a helper into the config, from one file to a sibling)
must leave every config's content unchanged; an intended change of a setting shows up here as a
diff to review and commit: ``python tests/test_config_dumps.py --update``.
"""

import argparse
import difflib
import json
import os
import re
from pathlib import Path
from unittest import mock

import pytest
from detectron2.config import LazyConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DUMPS = Path(__file__).resolve().parent / "data" / "config_dumps.json"
# Paths under $DETECTRON2_DATASETS depend on the environment; dumps are made with the default.
DATASETS_ENV = "DETECTRON2_DATASETS"


def dump(path: Path) -> str:
    """``LazyConfig.to_py`` of a config, one field a line, without black's formatting (which
    changes with black's version) and with object addresses (functions' reprs) removed."""
    with mock.patch("black.format_str", lambda text, mode: text):
        text = LazyConfig.to_py(LazyConfig.load(str(path)))
    return re.sub(r" at 0x[0-9a-f]+", "", text)


def all_dumps() -> dict:
    saved = os.environ.pop(DATASETS_ENV, None)
    try:
        return {p.name: dump(p) for p in sorted(CONFIGS.glob("*.py"))}
    finally:
        if saved is not None:
            os.environ[DATASETS_ENV] = saved


def test_every_config_matches_its_committed_dump():
    expected = json.loads(DUMPS.read_text())
    actual = all_dumps()
    assert sorted(actual) == sorted(expected), "configs added or removed: update the dumps"
    changed = [name for name in expected if actual[name] != expected[name]]

    # One argument a line, so that the diff shows the setting that moved.
    def lines(text):
        return re.sub(r", |\(", lambda m: m.group(0) + "\n", text).splitlines(True)

    diff = "".join(
        "".join(
            difflib.unified_diff(
                lines(expected[n] + "\n"), lines(actual[n] + "\n"), n, n + " (now)", n=1
            )
        )
        for n in changed
    )
    assert not changed, f"{len(changed)} configs changed:\n{diff[:6000]}"


@pytest.mark.parametrize("name", ["finetune_detr_cpu.py", "pretrain_box_cascade_rcnn_cpu.py"])
def test_dump_holds_the_settings(name):
    # The dump is the config's full content: a setting read from it matches the loaded config.
    cfg = LazyConfig.load(str(CONFIGS / name))
    lines = json.loads(DUMPS.read_text())[name].splitlines()
    assert f"cfg.train.max_iter={cfg.train.max_iter}" in lines
    assert f"cfg.train.output_dir={cfg.train.output_dir!r}" in lines


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--update", action="store_true", help="rewrite the committed dumps")
    if parser.parse_args().update:
        DUMPS.parent.mkdir(exist_ok=True)
        DUMPS.write_text(json.dumps(all_dumps(), indent=1, sort_keys=True) + "\n")
        print(f"wrote {DUMPS}")
