"""Reading a metric's options (``--metric-option fid.frames=8`` reaches the ``fid`` factory as ``{"frames": "8"}``):
known keys, integers and the device, with errors naming the option as the user wrote it."""

from __future__ import annotations

from collections.abc import Collection, Mapping

import torch

from mmflow.codecs import InputError


def check_options(options: Mapping[str, str], metric: str, known: Collection[str]) -> None:
    """Refuse keys the metric does not take (a typo would otherwise be ignored silently)."""
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise InputError(f"{metric} takes no option(s) {', '.join(f'{metric}.{k}' for k in unknown)}; "
                         f"its options: {', '.join(f'{metric}.{k}' for k in known)}")


def int_option(options: Mapping[str, str], metric: str, key: str, default: int, minimum: int) -> int:
    """``options[key]`` as an integer ≥ ``minimum`` (``default`` when absent)."""
    given = options.get(key)
    if given is None or given == "":
        return default
    try:
        value = int(given)
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise InputError(f"{metric}.{key}={given}: expected an integer ≥ {minimum}")
    return value


def device_option(options: Mapping[str, str], metric: str) -> torch.device:
    """``options["device"]`` (e.g. ``cpu``, ``cuda:0``); by default the first GPU when there is one, else the CPU."""
    given = options.get("device")
    if not given:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(given)
    except RuntimeError as error:
        raise InputError(f"{metric}.device={given}: not a device ({error}); use cpu or cuda:N") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"{metric}.device={given}: this machine has no CUDA device; use {metric}.device=cpu")
    return device
