"""Range checks for numbers a user (or a file from someone else) gives: refused where they enter, with a message
that names the input, the accepted range and the fix, instead of a deep exception or an absurd allocation later.

``Range`` says how a limit is checked and worded. The limits of every pipeline call (steps, guidance, seeds,
durations, spans, windows) live here; a stream's own inputs keep theirs in its plugin (e.g. the speaking rate in
the audio codec). ``mmflow generate`` checks a call before it loads the model, the pipeline again for Python
callers.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


class InputRangeError(ValueError):
    """A number outside the range its input accepts. The message names the input, the range and the fix."""


@dataclass(frozen=True)
class Range:
    """Accepted values of one numeric input: ``low ≤ value ≤ high`` (``low < value`` with ``open_low``)."""

    low: float
    high: float
    integer: bool = False
    open_low: bool = False

    def describe(self) -> str:
        low = "(" if self.open_low else "["
        kind = "an integer" if self.integer else "a number"
        return f"{kind} in {low}{_fmt(self.low)}, {_fmt(self.high)}]"

    def check(self, name: str, value, fix: str = "") -> float | int:
        """``value`` as an ``int`` / ``float`` when it lies in the range; else :class:`InputRangeError`."""
        hint = f"; {fix}" if fix else ""
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise InputRangeError(f"{name} must be {self.describe()}, got {value!r}{hint}")
        if self.integer and not float(value).is_integer():
            raise InputRangeError(f"{name} must be {self.describe()}, got {value!r}{hint}")
        number = int(value) if self.integer else float(value)
        above_low = self.low < number if self.open_low else self.low <= number
        if not (above_low and number <= self.high):  # NaN and ±inf fail these comparisons too
            raise InputRangeError(f"{name} must be {self.describe()}, got {value!r}{hint}")
        return number


def _fmt(value: float) -> str:
    if isinstance(value, int) or (float(value).is_integer() and abs(value) < 1e15):
        return str(int(value))
    return f"{value:g}"


MAX_SECONDS = 300.0
"""Longest stream one call generates or takes (five minutes); longer work is split by the caller."""
DURATION = Range(0.0, MAX_SECONDS, open_low=True)
STEPS = Range(1, 1000, integer=True)
GUIDANCE = Range(0.0, 20.0)
SEED = Range(0, 2**63 - 1, integer=True)
SPAN_TIME = Range(0.0, MAX_SECONDS)
SWAY = Range(-1.0, 1.0)
CROSS_FADE = Range(0.0, 2.0)
WINDOW = Range(1.0, 120.0)
"""``max_seconds`` of a pipeline (its training window), read from a model folder someone else may have made."""


def check_call_arguments(
    *,
    duration: float | None = None,
    num_inference_steps: int | None = None,
    guidance_scale: float | Mapping[str, float] = 0.0,
    seed: int | Sequence[int] = 0,
    spans: Mapping[str, Sequence[tuple[float, float]]] | None = None,
    sway_coefficient: float | None = None,
    cross_fade: float | None = None,
) -> None:
    """Refuse any number of a pipeline call outside its range, naming the argument, the range and the fix."""
    if sway_coefficient is not None:
        SWAY.check("sway_coefficient (--sway)", sway_coefficient, "-1 is F5-TTS's default; 0 is a uniform grid")
    if cross_fade is not None:
        CROSS_FADE.check("cross_fade (--cross-fade, seconds)", cross_fade, "0.15 s is F5-TTS's default")
    if duration is not None:
        DURATION.check("duration (--duration, seconds)", duration, "leave it out to follow the text or the given input")
    if num_inference_steps is not None:
        STEPS.check("num_inference_steps (--steps)", num_inference_steps, "16-32 steps are typical")
    scales = guidance_scale.items() if isinstance(guidance_scale, Mapping) else [("all streams", guidance_scale)]
    for stream, scale in scales:
        GUIDANCE.check(f"guidance_scale (--cfg) of {stream}", scale, "2.0 is typical; 0 switches guidance off")
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
