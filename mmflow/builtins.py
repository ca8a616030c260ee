"""The core's own registrations, made through the same hooks as any plugin."""

from __future__ import annotations

from .backbone import DiTBackbone
from .masks import local_global_policy
from .hookspecs import hookimpl


@hookimpl
def mmflow_backbones():
    return {"dit": DiTBackbone}


@hookimpl
def mmflow_mask_presets():
    return {"local_global": local_global_policy}
