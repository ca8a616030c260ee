"""Reading ``--metric-option name.key=value`` values: integers and the device, with errors naming the option."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from mmflow.codecs import InputError


def int_option(options: Mapping[str, str], key: str, default: int, minimum: int) -> int:
    """``options[key]`` as an integer ≥ ``minimum`` (``default`` when absent)."""
    given = options.get(key)
    if given is None or given == "":
        return default
    try:
        value = int(given)
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise InputError(f"{key}={given}: expected an integer ≥ {minimum}")
    return value


def device_option(options: Mapping[str, str], key: str) -> torch.device:
    """``options[key]`` (e.g. ``cpu``, ``cuda:0``); by default the first GPU when there is one, else the CPU."""
    given = options.get(key)
    if not given:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(given)
    except RuntimeError as error:
        raise InputError(f"{key}={given}: not a device ({error}); use cpu or cuda:N") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"{key}={given}: this machine has no CUDA device; use {key}=cpu")
    return device
