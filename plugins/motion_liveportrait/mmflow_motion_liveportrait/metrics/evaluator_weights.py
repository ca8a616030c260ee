"""Load an evaluator network's official weights file unchanged: plain tensors only, every key used, no key extra.

The files are ``torch.load``-ed with ``weights_only=True`` (no pickled code runs). Names and shapes must match the
network exactly; the one tolerance is batch norm's ``num_batches_tracked`` counter, which files saved before
PyTorch 0.4.1 lack and which no evaluation reads.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from mmflow.codecs import InputError
from mmflow.evaluation.options import Options, path_option

OPTIONAL_SUFFIX = ".num_batches_tracked"
MAX_LISTED = 8


class EvaluatorWeightsError(InputError):
    """A weights file is not the official file of the network it is given for."""


def weights_path(options: Options, file_name: str, source: str) -> Path:
    """The official weights file given as the metric's ``weights`` option (required); errors name the option,
    the file and where it comes from."""
    return path_option(options, "weights", f"Give the path of {file_name} ({source}); evaluator weights are never "
                                           f"downloaded.", required=True)


def load_official_weights(build: Callable[[], nn.Module], path: str | os.PathLike, label: str) -> nn.Module:
    """``build()`` with the tensors of ``path`` (checked as the module docstring says), in eval mode, no gradients.

    The network is built on the meta device and takes the file's tensors as they are (no random init first).
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file gets the same advice
        raise EvaluatorWeightsError(f"{path}: not a readable {label} weights file ({error}).") from error
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise EvaluatorWeightsError(f"{path}: expected a plain state dict of tensors for {label}.")
    with torch.device("meta"):
        module = build()
    expected = module.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith(OPTIONAL_SUFFIX)]
    extra = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
             if k in state and state[k].shape != v.shape]
    problems = [f"{what}: {', '.join(keys[:MAX_LISTED])}{', ...' if len(keys) > MAX_LISTED else ''}"
                for what, keys in (("missing", missing), ("unexpected", extra), ("wrong shape", wrong)) if keys]
    if problems:
        raise EvaluatorWeightsError(f"{path} is not the {label} weights file ({'; '.join(problems)}).")
    for key, value in expected.items():
        if key.endswith(OPTIONAL_SUFFIX) and key not in state:
            state[key] = torch.zeros((), dtype=value.dtype)
    module.load_state_dict(state, strict=True, assign=True)
    return module.eval().requires_grad_(False)


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (cache keys: the same content gives the same features wherever it lies)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
