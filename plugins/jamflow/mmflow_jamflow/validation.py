"""The accepted range of every number a JAM-Flow pipeline call takes, checked before any work is done.

``mmflow generate`` calls :func:`check_call_arguments` before it loads the model and the pipeline calls it again
(for Python callers), so the limits live here only. Sizes that follow from the inputs (frames to generate from a
duration, a speaking rate or a text; a given motion resampled to 25 fps; a given speech file) are bounded by
:func:`check_seconds` before anything of that size is allocated.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from mmflow.validation import InputRangeError, Range

MAX_SECONDS = 300.0
"""Longest speech and motion one call generates or takes (five minutes); longer work is split by the caller."""
SPEED = Range(0.25, 4.0)
DURATION = Range(0.0, MAX_SECONDS, open_low=True)
STEPS = Range(1, 1000, integer=True)
GUIDANCE = Range(0.0, 20.0)
SEED = Range(0, 2**63 - 1, integer=True)
SPAN_TIME = Range(0.0, MAX_SECONDS)
WINDOW = Range(1.0, 120.0)
"""``max_seconds`` of a pipeline (its training window), read from a model folder someone else may have made."""

TEMPLATE_SUFFIXES = (".pkl", ".npz")


def check_call_arguments(
    *,
    speed: float = 1.0,
    duration: float | None = None,
    num_inference_steps: int | None = None,
    guidance_scale: float | Mapping[str, float] = 2.0,
    seed: int | Sequence[int] = 0,
    spans: Mapping[str, Sequence[tuple[float, float]]] | None = None,
) -> None:
    """Refuse any number of a pipeline call outside its range, naming the argument, the range and the fix."""
    SPEED.check("speed (--speed)", speed, "1.0 is the natural speaking rate")
    if duration is not None:
        DURATION.check("duration (--duration, seconds)", duration, "leave it out to follow the text or the given input")
    if num_inference_steps is not None:
        STEPS.check("num_inference_steps (--steps)", num_inference_steps, "16-32 steps are typical")
    scales = guidance_scale.items() if isinstance(guidance_scale, Mapping) else [("all streams", guidance_scale)]
    for stream, scale in scales:
        GUIDANCE.check(f"guidance_scale (--cfg) of {stream}", scale, "2.0 is the default; 0 switches guidance off")
    for value in seed if isinstance(seed, Sequence) else [seed]:
        SEED.check("seed (--seed)", value)
    for stream, ranges in (spans or {}).items():
        for span in ranges:
            start, end = (SPAN_TIME.check(f"edit span of {stream} {tuple(span)}: {which}", value)
                          for which, value in zip(("start", "end"), span, strict=True))
            if not start < end:
                raise InputRangeError(f"edit span of {stream} {tuple(span)} must end after it starts (seconds)")


def check_seconds(seconds: float, what: str) -> None:
    """Refuse an input or a derived size longer than :data:`MAX_SECONDS` before it is allocated."""
    seconds = float(seconds)
    if not seconds <= MAX_SECONDS:
        raise InputRangeError(f"{what} lasts {seconds:.4g} s; one call handles at most {MAX_SECONDS:.0f} s: split "
                              f"the input (or the text) into shorter parts")


def motion_kind(path: str | os.PathLike) -> str:
    """``"template"`` or ``"video"`` for a motion file by its extension; anything else is refused by name."""
    from mmflow_motion_liveportrait.video import VIDEO_SUFFIXES

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"motion {str(path)!r} does not exist or is not a file")
    suffix = path.suffix.lower()
    if suffix in TEMPLATE_SUFFIXES:
        return "template"
    if suffix in VIDEO_SUFFIXES:
        return "video"
    raise ValueError(f"motion {str(path)!r} is neither a motion template ({', '.join(TEMPLATE_SUFFIXES)}) nor a "
                     f"video ({', '.join(VIDEO_SUFFIXES)}); to animate an image pass it as the portrait")
