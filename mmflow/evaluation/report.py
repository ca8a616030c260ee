"""The evaluation's summaries as JSON-safe data and as one Markdown table (metric, value, direction, n)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def jsonable(value: Any) -> Any:
    """``value`` with NaN / infinities as None and numpy scalars as Python numbers (strict JSON)."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def format_value(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    return f"{value:.4g}"


def headline_label(metric: str, key: str) -> str:
    """``metric (key)``, or the key alone when it already starts with the metric's name (``wer (whisper tiny.en)``)."""
    return key if key.startswith(metric) else f"{metric} ({key})"


def direction_label(higher_is_better: bool | None) -> str:
    return "" if higher_is_better is None else "higher is better" if higher_is_better else "lower is better"


def markdown_table(results: Mapping[str, Any]) -> str:
    """One row per reported number: the headline (:func:`headline_label`), then the metric's other figures as
    ``metric.key``; each with its direction where the metric gives one (``directions``; the headline's is
    ``higher_is_better``)."""
    lines = ["| metric | value | direction | n |", "|---|---:|---|---:|"]
    for name, entry in results["metrics"].items():
        directions = {entry["headline"]: entry["higher_is_better"], **entry.get("directions", {})}
        for key, value in entry["summary"].items():
            label = headline_label(name, key) if key == entry["headline"] else f"{name}.{key}"
            lines.append(f"| {label} | {format_value(value)} | {direction_label(directions.get(key))} | "
                         f"{entry['n']} |")
    return "\n".join(lines)
