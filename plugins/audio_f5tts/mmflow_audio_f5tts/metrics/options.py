"""Reading a metric's ``--metric-option`` values: bad values are refused by name (unknown keys:
``mmflow.evaluation.options.check_options``)."""

from __future__ import annotations

from pathlib import Path

from mmflow.codecs import InputError


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
