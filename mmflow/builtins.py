"""The core's own registrations, made through the same hooks as any plugin."""

from __future__ import annotations

from .backbone import DiTBackbone
from .hookspecs import hookimpl
from .masks import local_global_policy


@hookimpl
def mmflow_backbones():
    return {"dit": DiTBackbone}


@hookimpl
def mmflow_mask_presets():
    return {"local_global": local_global_policy}


@hookimpl
def mmflow_pipelines():
    from .pipeline import MMFlowPipeline

    return {"MMFlowPipeline": MMFlowPipeline}


@hookimpl
def mmflow_commands():
    from .app import add_app
    from .evaluation.command import add_evaluate
    from .generate_command import add_generate
    from .training.command import add_train

    return {"generate": add_generate, "train": add_train, "app": add_app, "evaluate": add_evaluate}
