"""mmflow: a modular plugin framework for multimodal flow-matching models."""

from diffusers import ModelMixin, SchedulerMixin  # noqa: F401  (diffusers resolves component base classes here)

from .attention import AttentionBackendError, attend
from .backbone import DiTBackbone, StreamBackbone
from .flow import FlowMatchingObjective, Guidance, generate, time_grid
from .masks import Blocked, Full, LocalWindow, MaskPolicy, SameTime, local_global_policy
from .pipeline import MMFlowOutput, MMFlowPipeline
from .hookspecs import hookimpl
from .plugins import PluginError, get_registry
from .tasks import TaskInput, TaskPreset
from .scheduler import FlowMatchingScheduler
from .streams import StreamBatch, StreamSpec
from .transformer import MMDiT

__version__ = "0.1.0"

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
    "time_grid",
]
