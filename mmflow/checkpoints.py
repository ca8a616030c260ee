"""Comparing a checkpoint's weights with a model's, for loaders that must refuse partial loads."""

from __future__ import annotations

from collections.abc import Mapping

import torch


def _first(items: list[str], limit: int) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... and {len(items) - limit} more" if len(items) > limit else "")


def state_dict_problems(
    expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor], limit: int = 10
) -> list[str]:
    """Missing, unexpected and mis-shaped keys of ``found`` against ``expected``, one summary line per kind
    (``"missing keys (2): a, b"``, ``"unexpected keys (1): c"``, ``"shape mismatches (1): w: file [3] vs model [4]"``);
    empty when the two match exactly."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    mismatched = sorted(
        f"{key}: file {list(found[key].shape)} vs model {list(expected[key].shape)}"
        for key in set(expected) & set(found)
        if found[key].shape != expected[key].shape
    )
    kinds = (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched))
    return [f"{label} ({len(items)}): {_first(items, limit)}" for label, items in kinds if items]
