"""A JAM-Flow call's numbers and files, checked before the model loads (``mmflow generate``) and again by the pipeline.

Each limit has one home: the call's (steps, guidance, seeds, durations, spans) in ``mmflow.validation``, the speaking
rate in the audio stream's codec, the motion file kinds in the motion stream's codec. This module only puts JAM-Flow's
call together from them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from mmflow_audio_f5tts.codec import SPEED
from mmflow_motion_liveportrait.codec import motion_file_kind as motion_kind  # noqa: F401  (the CLI's early check)

from mmflow import validation


def check_call_arguments(
    *,
    speed: float = 1.0,
    duration: float | None = None,
    num_inference_steps: int | None = None,
    guidance_scale: float | Mapping[str, float] = 2.0,
    seed: int | Sequence[int] = 0,
    spans: Mapping[str, Sequence[tuple[float, float]]] | None = None,
    **call,
) -> None:
    """Refuse any number of a JAM-Flow call outside its range, naming the argument, the range and the fix
    (``call``: the generic pipeline's other numbers, e.g. ``sway_coefficient``)."""
    SPEED.check("speed (--speed)", speed, "1.0 is the natural speaking rate")
    validation.check_call_arguments(duration=duration, num_inference_steps=num_inference_steps,
                                    guidance_scale=guidance_scale, seed=seed, spans=spans, **call)
