"""Registrations of the three-stream example plugin, made only through mmflow's public hooks.

``beat`` (40 Hz, 2 channels) is a rotating phasor whose amplitude is a slow envelope; ``pose`` (10 Hz, 3 channels)
and ``glow`` (8 Hz, 1 channel) are other views of the same envelope, so every stream can be read off the others.
"""

from __future__ import annotations

from fractions import Fraction
from importlib import resources

from mmflow import StreamSpec, TaskPreset, hookimpl

BEAT = StreamSpec(name="beat", frame_rate=Fraction(40), channels=2)
POSE = StreamSpec(name="pose", frame_rate=Fraction(10), channels=3)
GLOW = StreamSpec(name="glow", frame_rate=Fraction(8), channels=1)


def config_path(name: str = "tri.yaml") -> str:
    """A training config shipped with the plugin (``mmflow train --config $(...)``)."""
    return str(resources.files(__package__) / "configs" / name)


@hookimpl
def mmflow_streams():
    return [BEAT, POSE, GLOW]


@hookimpl
def mmflow_tasks():
    return [
        TaskPreset("tri_joint", "generate beat, pose and glow together (pass duration=)",
                   generate=("beat", "pose", "glow")),
        TaskPreset("pose_from_beat", "the pose of a given beat (glow left out)", generate=("pose",), given=("beat",),
                   absent=("glow",)),
        TaskPreset("glow_from_beat_and_pose", "the glow of a given beat and pose", generate=("glow",),
                   given=("beat", "pose")),
        TaskPreset("tri_edit", "regenerate time spans of beat and pose, keep the rest and the glow",
                   generate=("beat", "pose"), given=("glow",), editable=True),
    ]
