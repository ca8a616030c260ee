"""FSDP on CPU processes over gloo: the rehearsal of a GPU FSDP run (recipes/configs/accelerate/fsdp_cpu.yaml).

Why this module: two things stand between ``accelerate launch`` with ``distributed_type: FSDP`` + ``use_cpu``
and torch's FSDP, which itself runs on CPU over gloo:

* Accelerate (1.15) makes a multi-process CPU launch plain data parallelism (``MULTI_CPU``) and drops the FSDP
  settings it exported, so the rehearsal would silently be DDP. ``enable`` builds the FSDP plugin from those
  settings (the ``FSDP_*`` variables) and switches the process-wide state to FSDP on the ``cpu`` device that
  FSDP expects (MULTI_CPU's is ``cpu:0``).
* torch (2.13) crashes (SIGSEGV/SIGABRT) gathering a ``FULL_STATE_DICT`` with ``offload_to_cpu`` or
  ``rank0_only`` on CPU tensors, and Accelerate's ``save_fsdp_model`` / ``load_fsdp_model`` turn both on whenever
  there is more than one process. ``one_process_view`` shows them an accelerator with one process, so every rank
  gathers the whole state dict in place (small CPU models only) and rank 0 writes it.

Nothing here runs on GPUs: ``enable`` does nothing unless Accelerate chose ``MULTI_CPU`` for an FSDP launch.
"""

from __future__ import annotations

import functools
import os

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import DistributedType


class _OneProcessView:
    """An accelerator that says ``num_processes == 1`` (everything else is the real one's)."""

    num_processes = 1

    def __init__(self, accelerator: Accelerator) -> None:
        self._accelerator = accelerator

    def __getattr__(self, name: str):
        return getattr(self._accelerator, name)


def one_process_view(accelerator: Accelerator):
    """``accelerator`` as Accelerate's FSDP save/load functions should see it on CPU (module docstring)."""
    return _OneProcessView(accelerator) if accelerator.device.type == "cpu" else accelerator


def enable(accelerator: Accelerator) -> None:
    """Turn an FSDP launch that Accelerate made ``MULTI_CPU`` into FSDP on the CPU (module docstring)."""
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() != "true":
        return
    if accelerator.distributed_type != DistributedType.MULTI_CPU:
        return
    import accelerate.accelerator as accelerator_module
    from accelerate.utils import FullyShardedDataParallelPlugin

    plugin = FullyShardedDataParallelPlugin()
    for config in (plugin.state_dict_config, plugin.optim_state_dict_config):
        if config is not None:
            config.offload_to_cpu, config.rank0_only = False, False
    accelerator.state.fsdp_plugin = plugin
    # both shared states: a later AcceleratorState() copies the process-wide PartialState's values over its own
    for state in (PartialState(), accelerator.state):
        state.distributed_type = DistributedType.FSDP
        state.device = torch.device("cpu")
    original = accelerator_module.save_fsdp_model
    if not getattr(original, "_mmflow_cpu", False):
        @functools.wraps(original)
        def save_fsdp_model(plugin, accelerator, *args, **kwargs):
            return original(plugin, one_process_view(accelerator), *args, **kwargs)

        save_fsdp_model._mmflow_cpu = True
        accelerator_module.save_fsdp_model = save_fsdp_model
