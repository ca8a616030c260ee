"""A natural idle face for talking heads that have no driving motion: blinks, brow life, gaze and slow drift.

Why: when a task has no given motion (talking head from text, speech with a portrait), the motion stream is
conditioned on the non-mouth expression e_rest. All zeros there is the training set's mean face, frozen: nothing
ever blinks. This module makes what the synthetic corpus's faces do besides speaking (blinks every 2-6 s,
slow drift, gaze wander, brow movement) from a seed, so the pipeline can condition on it and the corpus
(``mmflow_jamflow.data.visemes``) uses the very same generator.

Only the non-mouth keypoints move; the mouth keypoints (what the model generates) stay zero.
"""

from __future__ import annotations

import os
from fractions import Fraction

import numpy as np

from .expression_layout import (
    BLINK,
    BROW_KEYPOINT_INDICES,
    DRIFT_KEYPOINT_INDICES,
    EYE_KEYPOINT_INDICES,
    INERT_KEYPOINT_INDICES,
)
from .keypoints import NUM_KEYPOINTS

BLINK_CLOSE, BLINK_HOLD, BLINK_OPEN = 0.05, 0.03, 0.08  # seconds: a blink takes ~0.15 s
BLINK_INTERVAL = (2.0, 6.0)
BROW_DRIFT, HEAD_DRIFT, GAZE_DRIFT = 0.002, 0.0015, 0.001  # expression units


FIRST_BLINK = (0.2, BLINK_INTERVAL[1] - 1.0)
"""Range of the first blink's onset in the synthetic corpus (seconds)."""
IDLE_FIRST_BLINK = (0.3, 1.5)
"""The idle track's first blink comes early, so that short clips (a sentence or two) blink too."""


def blink_times(seconds: float, rng: np.random.Generator, first: tuple[float, float] = FIRST_BLINK) -> np.ndarray:
    """Blink onsets in ``[0, seconds)``: the first in ``first`` seconds, then every 2–6 s."""
    times = []
    t = rng.uniform(*first)
    while t < seconds:
        times.append(t)
        t += rng.uniform(*BLINK_INTERVAL)
    return np.asarray(times, dtype=np.float64)


def blink_curve(onsets: np.ndarray, num_frames: int, frame_rate: float) -> np.ndarray:
    """Eye closure ``(num_frames,)`` in [0, 1]: smooth close, short hold, slower reopening per onset."""
    times = np.arange(num_frames) / float(frame_rate)
    closure = np.zeros(num_frames)
    for onset in onsets:
        rel = times - onset
        rise = np.clip(rel / BLINK_CLOSE, 0, 1)
        fall = np.clip((rel - BLINK_CLOSE - BLINK_HOLD) / BLINK_OPEN, 0, 1)
        shape = rise * rise * (3 - 2 * rise) * (1 - fall * fall * (3 - 2 * fall))
        closure = np.maximum(closure, shape)
    return closure


def drift(num_frames: int, rng: np.random.Generator, amplitude: float, frame_rate: float) -> np.ndarray:
    """Slow smooth noise ``(num_frames,)``: three sinusoids of 0.05–0.5 Hz with random phases."""
    times = np.arange(num_frames) / float(frame_rate)
    freqs = rng.uniform(0.05, 0.5, size=3)
    phases = rng.uniform(0, 2 * np.pi, size=3)
    weights = rng.uniform(0.5, 1.0, size=3)
    wave = (weights[:, None] * np.sin(2 * np.pi * freqs[:, None] * times[None, :] + phases[:, None])).sum(0)
    return amplitude * wave / weights.sum()


def add_idle_motion(
    exp: np.ndarray,
    rng: np.random.Generator,
    frame_rate: float,
    blink_gain: float = 1.0,
    first_blink: tuple[float, float] = FIRST_BLINK,
) -> None:
    """Add blinks, brow and head drift and gaze wander to ``exp`` (``T×21×3`` float64, in place) and zero the
    inert keypoints. The draws from ``rng`` come in a fixed order, so the same generator gives the same face."""
    num_frames = exp.shape[0]
    onsets = blink_times(num_frames / float(frame_rate), rng, first_blink)
    closure = blink_gain * blink_curve(onsets, num_frames, frame_rate)
    for k, axis, offset in BLINK:
        exp[:, k, axis] += offset * closure
    for k in BROW_KEYPOINT_INDICES:
        exp[:, k, 1] += drift(num_frames, rng, BROW_DRIFT, frame_rate)
    for k in DRIFT_KEYPOINT_INDICES:
        for axis in (0, 1):
            exp[:, k, axis] += drift(num_frames, rng, HEAD_DRIFT, frame_rate)
    for k in EYE_KEYPOINT_INDICES:  # slow gaze wander
        exp[:, k, 0] += drift(num_frames, rng, GAZE_DRIFT, frame_rate)
    exp[:, list(INERT_KEYPOINT_INDICES), :] = 0.0


def idle_motion(num_frames: int, seed: int, frame_rate: float | Fraction, blink_gain: float = 1.0) -> np.ndarray:
    """Idle expression offsets ``(num_frames, 21, 3)`` float32 at ``frame_rate`` (the motion stream's), from
    ``seed``: add them to a neutral face. Same arguments, same array."""
    if num_frames < 0:
        raise ValueError(f"num_frames must be >= 0, got {num_frames}")
    if not float(frame_rate) > 0:
        raise ValueError(f"frame_rate must be positive frames per second, got {frame_rate}")
    exp = np.zeros((num_frames, NUM_KEYPOINTS, 3))
    rng = np.random.default_rng([0x1D1E, int(seed) & 0xFFFFFFFF])
    add_idle_motion(exp, rng, float(frame_rate), blink_gain, IDLE_FIRST_BLINK)
    return exp.astype(np.float32)


IDLE_CHOICES = ("natural", "off")


def check_idle(idle):
    """``"natural"``, None (off) or a loaded :class:`~.motion_template.MotionTemplate`, for an ``idle`` argument of
    :func:`idle_track`; anything else is refused here, before any work (a template file is read once)."""
    from .motion_template import MotionTemplate, load_motion_template

    if idle is None or idle is False or (isinstance(idle, str) and idle == "off"):
        return None
    if (isinstance(idle, str) and idle == "natural") or isinstance(idle, MotionTemplate):
        return idle
    if isinstance(idle, str | os.PathLike) and str(idle).lower().endswith((".pkl", ".npz")):
        return load_motion_template(idle)
    raise ValueError(
        f"idle must be one of {IDLE_CHOICES}, a LivePortrait motion template (.pkl/.npz) or a MotionTemplate; "
        f"got {idle!r}."
    )


def idle_track(idle, num_frames: int, seed: int, frame_rate: float | Fraction, neutral: np.ndarray) -> np.ndarray | None:
    """The non-mouth expression to condition a motion stream on when no motion is given, ``T×21×3`` float32.

    idle: ``"natural"`` (``neutral`` + :func:`idle_motion` from ``seed``), ``"off"`` / None / False (None: keep
    the mean face), or a LivePortrait template (``.pkl``/``.npz`` path or :class:`~.motion_template.MotionTemplate`)
    whose expression is used as it is, resampled to ``frame_rate`` and played back and forth to ``num_frames``.
    neutral: the ``21×3`` face the natural idle motion is added to (the model's mean face). Only the non-mouth
    keypoints of the result matter to the caller (the mouth is generated).
    """
    idle = check_idle(idle)
    if idle is None:
        return None
    if isinstance(idle, str):  # "natural"
        return (np.asarray(neutral, np.float32)[None] + idle_motion(num_frames, seed, frame_rate)).astype(np.float32)
    exp = np.asarray(idle.exp, np.float64).reshape(idle.num_frames, NUM_KEYPOINTS, 3)
    times = np.arange(num_frames) / float(frame_rate)  # played back and forth, resampled to the stream's rate
    period = (len(exp) - 1) / float(idle.fps)
    if period <= 0:
        return np.repeat(exp[:1], num_frames, axis=0).astype(np.float32)
    phase = np.mod(times, 2 * period)
    source = np.minimum(phase, 2 * period - phase) * float(idle.fps)  # fractional template frame
    low = np.floor(source).astype(int).clip(0, len(exp) - 1)
    high = np.minimum(low + 1, len(exp) - 1)
    weight = (source - low)[:, None, None]
    return ((1 - weight) * exp[low] + weight * exp[high]).astype(np.float32)
