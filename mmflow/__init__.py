"""mmflow: a modular plugin framework for multimodal flow-matching models."""

import os

# Idle OpenMP threads sleep instead of spinning (unless the user chose otherwise). On a small shared CPU a
# spinning thread takes the core its partner needs: `mmflow generate` on 2 cores next to one busy process ran
# 38.5 s with the default and 6.6 s with PASSIVE, same output bytes (benchmarks/cpu_realtime.py, issue 19).
# It must be set before torch loads its OpenMP runtime, hence here, first.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from diffusers import ModelMixin, SchedulerMixin  # noqa: F401  (diffusers resolves component base classes here)

from .attention import AttentionBackendError, attend
from .backbone import DiTBackbone, StreamBackbone
from .diffusers_compat import register_with_diffusers
from .flow import FlowMatchingObjective, Guidance, generate, time_grid
from .hookspecs import hookimpl
from .masks import Blocked, Full, LocalWindow, MaskPolicy, SameTime, local_global_policy
from .pipeline import MMFlowOutput, MMFlowPipeline
from .plugins import PluginError, get_registry
from .scheduler import FlowMatchingScheduler
from .streams import StreamBatch, StreamSpec
from .tasks import TaskInput, TaskPreset
from .transformer import MMDiT

__version__ = "0.1.0"

register_with_diffusers()  # DiffusionPipeline.from_pretrained finds mmflow pipelines (mmflow.diffusers_compat)

__all__ = [
    "AttentionBackendError",
    "Blocked",
    "DiTBackbone",
    "FlowMatchingObjective",
    "FlowMatchingScheduler",
    "Full",
    "Guidance",
    "LocalWindow",
    "MMDiT",
    "MMFlowOutput",
    "MMFlowPipeline",
    "MaskPolicy",
    "PluginError",
    "SameTime",
    "StreamBackbone",
    "StreamBatch",
    "StreamSpec",
    "TaskInput",
    "TaskPreset",
    "attend",
    "generate",
    "get_registry",
    "hookimpl",
    "local_global_policy",
    "register_with_diffusers",
    "time_grid",
]
