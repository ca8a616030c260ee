"""Reading a checkpoint folder back without running any code from it.

A checkpoint folder may come from someone else (a shared output folder, a download), and unpickling a file
can run arbitrary code. So every file a resume reads is loaded by a reader that cannot: safetensors for
weights, ``torch.load(weights_only=True)`` (plain containers, numbers, strings, tensors and, for the random
states, numpy arrays) for the rest. Accelerate's ``load_state`` is not used: it unpickles the files of objects
registered with ``register_for_checkpointing`` with ``weights_only=False`` and skips random states it cannot
read without a word, which breaks exact resume. ``restore_accelerator_state`` reads what ``save_state``
wrote for the usual data-parallel setups and for FSDP with ``FULL_STATE_DICT`` (whole model and optimizer
files, read by Accelerate's FSDP loaders with ``weights_only=True``), and raises ``CheckpointError`` naming the
file that is missing, damaged or not plain data. FSDP's ``SHARDED_STATE_DICT`` is refused: its
``torch.distributed.checkpoint`` folders keep their index in a pickled ``.metadata`` file.
"""

from __future__ import annotations

import codecs
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

# What ``np.random.get_state()`` pickles into (an array of uint32 and its dtype); nothing that runs code.
_NUMPY_STATE_GLOBALS = [np.ndarray, np.dtype, type(np.dtype(np.uint32)), codecs.encode,
                        getattr(np, "_core", getattr(np, "core", None)).multiarray._reconstruct]

# Setups whose ``save_state`` writes whole (unsharded) model and optimizer files.
_DATA_PARALLEL = {DistributedType.NO, DistributedType.MULTI_CPU, DistributedType.MULTI_GPU,
                  DistributedType.MULTI_NPU, DistributedType.MULTI_XPU, DistributedType.MULTI_HPU}


FSDP_MODEL_FILE = "pytorch_model_fsdp.bin"  # Accelerate's name for an FSDP model's full state dict
FSDP_OPTIMIZER_FILE = "optimizer.bin"


class CheckpointError(ValueError):
    """A checkpoint file is missing, damaged, or holds something other than plain data."""


def _require(path: Path, what: str) -> Path:
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: the checkpoint has no {what}; it is incomplete or not written "
                              f"by this recipe. Resume from another checkpoint, or start over with --resume none")
    return path


# Lines of torch's weights_only error that say nothing about the file (one advises loading it in full).
_BOILERPLATE = ("Weights only load failed", "Check the documentation of torch.load", "Please file an issue")


def _reason(error: Exception) -> str:
    """The line of ``error`` that says what is wrong with the file, without torch's generic advice."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    specific = [line for line in lines if not line.startswith(_BOILERPLATE)]
    return (specific or lines or [type(error).__name__])[0]


def _refused(path: Path, what: str, error: Exception) -> CheckpointError:
    reason = _reason(error)
    return CheckpointError(
        f"{path}: refused to load the {what} ({type(error).__name__}: {reason}). Checkpoints hold only tensors and "
        f"plain values, read without running code; this file is damaged, or was changed or made elsewhere. Resume "
        f"from a checkpoint you wrote yourself, or start over with --resume none"
    )


def load_plain(path: str | os.PathLike, what: str, numpy_arrays: bool = False, mmap: bool = False) -> Any:
    """``torch.load(weights_only=True)`` of ``path`` (tensors and plain values; numpy arrays if asked) on the CPU;
    ``mmap``: tensors stay in the file until used (checking a large file's keys and shapes reads little)."""
    path = _require(Path(path), what)
    try:
        if numpy_arrays:
            with torch.serialization.safe_globals(_NUMPY_STATE_GLOBALS):
                return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as error:  # UnpicklingError, RuntimeError (not a zip), EOFError, ...: all mean "not ours"
        raise _refused(path, what, error) from None


def load_tensors(path: str | os.PathLike, what: str) -> dict[str, torch.Tensor]:
    """The tensors of the safetensors file ``path``, on the CPU."""
    path = _require(Path(path), what)
    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise _refused(path, what, error) from None


def tensor_shapes(path: str | os.PathLike, what: str) -> tuple[dict[str, list[int]], dict[str, str]]:
    """Shapes of the tensors in the safetensors file ``path`` and its metadata, read from the header only."""
    path = _require(Path(path), what)
    try:
        with safe_open(str(path), framework="pt") as file:
            return {key: file.get_slice(key).get_shape() for key in file.keys()}, dict(file.metadata() or {})
    except (SafetensorError, OSError, ValueError) as error:
        raise _refused(path, what, error) from None


def restore_random_states(path: str | os.PathLike):
    """Set Python's, numpy's and torch's global generators (CPU, and CUDA where saved) from ``save_state``'s file."""
    states = load_plain(path, "random number generator states", numpy_arrays=True)
    try:
        python_state = states["random_state"]
        random.setstate((python_state[0], tuple(python_state[1]), python_state[2]))
        np.random.set_state(states["numpy_random_seed"])
        torch.set_rng_state(states["torch_manual_seed"])
        if torch.cuda.is_available() and "torch_cuda_manual_seed" in states:
            torch.cuda.set_rng_state_all(states["torch_cuda_manual_seed"])
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as error:
        raise _refused(Path(path), "random number generator states", error) from None


def restore_accelerator_state(accelerator: Accelerator, folder: str | os.PathLike, model: torch.nn.Module,
                              optimizer: torch.optim.Optimizer, scheduler) -> None:
    """Load into the prepared ``model``, ``optimizer`` and ``scheduler`` and the global RNGs what
    ``accelerator.save_state`` wrote to ``folder`` (``model.safetensors``, ``optimizer.bin``, ``scheduler.bin``,
    ``scaler.pt`` under fp16, ``random_states_<rank>.pkl``), reading every file without running code."""
    folder = Path(folder)
    if accelerator.distributed_type == DistributedType.FSDP:
        _restore_fsdp(accelerator, folder, model, optimizer)
        parts = [(folder / "scheduler.bin", scheduler, "learning-rate scheduler state")]
    elif accelerator.distributed_type in _DATA_PARALLEL:
        weights = load_tensors(folder / "model.safetensors", "model weights")
        try:
            accelerator.unwrap_model(model).load_state_dict(weights)
        except RuntimeError as error:
            raise _refused(folder / "model.safetensors", "model weights", error) from None
        parts = [(folder / "optimizer.bin", optimizer, "optimizer state"),
                 (folder / "scheduler.bin", scheduler, "learning-rate scheduler state")]
    else:
        raise CheckpointError(
            f"resuming under {accelerator.distributed_type} is not supported (its checkpoints are read with "
            f"Accelerate's own loader, which may unpickle); train with data parallelism (accelerate launch "
            f"--multi_gpu) or FSDP with fsdp_state_dict_type: FULL_STATE_DICT"
        )
    if accelerator.scaler is not None:  # fp16: the loss scale and its growth counter, or the resume is not exact
        parts.append((folder / "scaler.pt", accelerator.scaler, "fp16 loss-scaler state"))
    for file, target, what in parts:
        state = load_plain(file, what)
        try:
            target.load_state_dict(state)
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            raise _refused(file, what, error) from None
    restore_random_states(folder / f"random_states_{accelerator.process_index}.pkl")


def _restore_fsdp(accelerator: Accelerator, folder: Path, model: torch.nn.Module,
                  optimizer: torch.optim.Optimizer) -> None:
    """The FSDP model and optimizer from their full state dicts (``FULL_STATE_DICT``), through Accelerate's loaders,
    which read them with ``weights_only=True``; every file is checked first, so nothing is half loaded."""
    from accelerate.utils import load_fsdp_model, load_fsdp_optimizer
    from torch.distributed.fsdp import StateDictType

    plugin = accelerator.state.fsdp_plugin
    if plugin.state_dict_type != StateDictType.FULL_STATE_DICT:
        raise CheckpointError(
            f"resuming FSDP with {plugin.state_dict_type.name} is refused: its torch.distributed.checkpoint folders "
            f"keep their index in a pickled .metadata file, which runs code when read. Set fsdp_state_dict_type: "
            f"FULL_STATE_DICT in the accelerate config (recipes/configs/accelerate/fsdp.yaml)"
        )
    for file, what in ((FSDP_MODEL_FILE, "model weights"), (FSDP_OPTIMIZER_FILE, "optimizer state")):
        load_plain(folder / file, what, mmap=True)  # present and plain data, or a CheckpointError naming it
    from .fsdp_cpu import one_process_view

    view = one_process_view(accelerator)  # on CPU: no offload, no rank-0-only gathering (fsdp_cpu.py)
    try:
        load_fsdp_model(plugin, view, model, str(folder))
        load_fsdp_optimizer(plugin, view, optimizer, model, str(folder))
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise _refused(folder / FSDP_MODEL_FILE, "FSDP model and optimizer state", error) from None
