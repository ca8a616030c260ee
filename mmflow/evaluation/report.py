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


def markdown_table(results: Mapping[str, Any]) -> str:
    """One row per reported number: the headline (:func:`headline_label`) with its direction, then the metric's
    other figures as ``metric.key``."""
    lines = ["| metric | value | direction | n |", "|---|---:|---|---:|"]
    for name, entry in results["metrics"].items():
        direction = "higher is better" if entry["higher_is_better"] else "lower is better"
        for key, value in entry["summary"].items():
            if key == entry["headline"]:
                lines.append(f"| {headline_label(name, key)} | {format_value(value)} | {direction} | {entry['n']} |")
            else:
                lines.append(f"| {name}.{key} | {format_value(value)} |  | {entry['n']} |")
    return "\n".join(lines)
