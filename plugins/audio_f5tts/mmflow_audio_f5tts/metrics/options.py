"""Reading a metric's ``--metric-option`` values: unknown keys and bad values are refused by name."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from mmflow.codecs import InputError


def check_options(metric: str, options: Mapping[str, str], known: Mapping[str, str]) -> dict[str, str]:
    """``options`` as a dict, after refusing keys not in ``known`` (key -> one-line help, listed in the error)."""
    unknown = sorted(set(options) - set(known))
    if unknown:
        listed = "; ".join(f"{metric}.{key}: {help_}" for key, help_ in known.items())
        raise InputError(f"metric {metric!r} has no option(s) {unknown}; its options are: {listed}")
    return dict(options)


def existing_path(metric: str, key: str, value: str, fix: str) -> Path:
    """The path an option names, which must exist (``fix`` says where to get it)."""
    path = Path(value).expanduser()
    if not path.exists():
        raise InputError(f"--metric-option {metric}.{key}={value}: no such file or folder. {fix}")
    return path


def whole_number(metric: str, key: str, value: str, minimum: int = 1) -> int:
    """An option's value as an int of at least ``minimum``."""
    try:
        number = int(value)
    except ValueError:
        number = minimum - 1
    if number < minimum:
        raise InputError(f"--metric-option {metric}.{key}={value}: expected a whole number >= {minimum}")
    return number
