"""Registrations of the toy plugin, made only through mmflow's public hooks."""

from __future__ import annotations

from fractions import Fraction
from importlib import resources

from mmflow import StreamSpec, TaskPreset, hookimpl

SIGNAL = StreamSpec(name="signal", frame_rate=Fraction(50), channels=1)
GESTURE = StreamSpec(name="gesture", frame_rate=Fraction(15), channels=1)


def config_path(name: str = "toy.yaml") -> str:
    """The plugin's training config (``mmflow train --config``): its streams, its dataset source
    (``mmflow_toy_gesture.dataset:build_dataset``) and a short CPU schedule."""
    return str(resources.files(__package__) / "configs" / name)


@hookimpl
def mmflow_streams():
    return [SIGNAL, GESTURE]


@hookimpl
def mmflow_tasks():
    return [
        TaskPreset("toy_joint", "generate signal and gesture together", generate=("signal", "gesture")),
        TaskPreset("gesture_from_signal", "generate the gesture of a given signal", ("gesture",), ("signal",)),
        TaskPreset("signal_from_gesture", "generate a signal whose envelope follows a gesture", ("signal",), ("gesture",)),
    ]


@hookimpl
def mmflow_demos():
    from .demo import main

    return {"toy": main}
