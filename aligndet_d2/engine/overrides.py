"""Command-line ``key=value`` overrides checked against the config before they are applied.

Detectron2's ``LazyConfig.apply_overrides`` creates any key it is given: a misspelled key of a
plain node (``train.max_iters=2``) is silently ignored and the default schedule runs, and one of a
``LazyCall`` node (``model.roi_heads.num_clases=3``) ends in a ``TypeError`` from deep inside
``instantiate``; a value of the wrong type (``train.max_iter=abc``) fails far from its cause.
:func:`apply_checked_overrides` refuses each of these first, in one line naming the key, with the
nearest valid names.
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any, List, Optional, Sequence

from detectron2.config import LazyConfig
from omegaconf import DictConfig, OmegaConf

__all__ = ["OPTIONAL_KEYS", "OverrideError", "apply_checked_overrides", "check_override"]

# Keys read with a default, which a config may leave out: this package's, and those of
# Detectron2's default_setup (train.seed, train.cudnn_benchmark).
OPTIONAL_KEYS = {
    "train": ("auto_scale", "reference_batch_size", "device", "seed", "cudnn_benchmark"),
}


class OverrideError(KeyError):
    """A command-line override that names no key of the config or gives it a wrong value."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def _nearest(name: str, names: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(names), n=3, cutoff=0.6)
    if close:
        return "did you mean " + " or ".join(close) + "?"
    return "valid keys: " + ", ".join(sorted(names)[:12]) + ("..." if len(names) > 12 else "")


def _target_parameters(node: DictConfig) -> Optional[List[str]]:
    """The keyword arguments the ``_target_`` of a LazyCall node takes, or None when it takes any
    or its signature cannot be read.

    A class whose ``__init__`` passes ``**kwargs`` on (Detectron2's ``StandardROIHeads`` to
    ``ROIHeads``) takes its bases' arguments too, up to the first base without ``**kwargs``."""
    from detectron2.utils.registry import locate

    target = node.get("_target_")
    if isinstance(target, str):
        try:
            target = locate(target)
        except Exception:
            return None
    chain = (
        [c.__init__ for c in target.__mro__ if c is not object]
        if inspect.isclass(target)
        else [target]
    )
    names: List[str] = []
    for fn in chain:
        try:
            params = inspect.signature(fn).parameters.values()
        except (TypeError, ValueError):
            return None
        names += [
            p.name
            for p in params
            if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
            and p.name != "self"
        ]
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            return names
    return None


def _type_problem(old: Any, new: Any) -> Optional[str]:
    """Why ``new`` cannot replace the config's ``old`` value, or None."""
    if old is None or new is None or isinstance(old, str) or OmegaConf.is_config(old):
        return None
    numeric = (int, float)
    if isinstance(old, bool):
        return None if isinstance(new, bool) else "expected True or False"
    if isinstance(old, numeric) and not isinstance(new, numeric):
        return f"expected a number (the config has {old!r})"
    if isinstance(old, int) and isinstance(new, float) and not new.is_integer():
        return f"expected an integer (the config has {old!r})"
    return None


def check_override(cfg: DictConfig, key: str, value: Any) -> None:
    """Refuses an override whose key the config does not have or whose value has the wrong type.

    A key may be new only where something reads it: in a LazyCall node when its target takes
    that keyword, or one of :data:`OPTIONAL_KEYS`.

    Raises:
        OverrideError: naming the key, the problem and the nearest valid keys.
    """
    parts = key.split(".")
    node: Any = cfg
    for i, part in enumerate(parts):
        here = ".".join(parts[: i + 1])
        if not isinstance(node, DictConfig):
            if OmegaConf.is_config(node):  # a list node: Detectron2 refuses it itself
                return
            raise OverrideError(
                f"override {key}={value!r}: {'.'.join(parts[:i])} is a value "
                f"({type(node).__name__}), not a config node"
            )
        if part in node:
            child = node._get_node(part)
            # The raw value: an interpolation ("${..num_classes}") stays a string, unresolved.
            node = child if OmegaConf.is_config(child) else child._value()
            if i == len(parts) - 1:
                problem = _type_problem(node, value)
                if problem:
                    raise OverrideError(f"override {key}={value!r}: {problem}")
            continue
        if i < len(parts) - 1:
            raise OverrideError(
                f"override {key}={value!r}: the config has no {here} "
                f"({_nearest(part, [k for k in node.keys() if k != '_target_'])})"
            )
        parent = ".".join(parts[:i])
        if "_target_" in node:
            params = _target_parameters(node)
            if params is None or part in params:
                return
            names = params
        else:
            if part in OPTIONAL_KEYS.get(parent, ()):
                return
            names = [k for k in node.keys()]
        raise OverrideError(
            f"override {key}={value!r}: {parent} has no key {part!r} ({_nearest(part, names)})"
        )


def apply_checked_overrides(cfg: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """``LazyConfig.apply_overrides`` after :func:`check_override` of each override (parsed with
    the same Hydra grammar).

    Raises:
        OverrideError: the first override that names no key of the config, or gives a value of
            the wrong type.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    for o in parsed:
        check_override(cfg, o.key_or_group, o.value())
    return LazyConfig.apply_overrides(cfg, list(overrides))
