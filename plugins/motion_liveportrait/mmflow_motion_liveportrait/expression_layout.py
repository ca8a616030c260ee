"""Named directions in LivePortrait's 21×3 expression space: what a blink, a brow raise, gaze or a lip shape is.

One table serves both sides: the synthetic motion writes these directions (``idle.py`` for the eyes, brows and
drift; ``mmflow_jamflow.data.visemes`` for the mouth shapes) and the weights-free renderer reads them back
(``render.LandmarkFallbackRenderer``), so the two can never disagree. Entries are ``(keypoint, axis, offset)``
per unit of the named quantity; axis 0 is x (right), 1 is y (down), 2 is z. The directions and magnitudes are
heuristics read off LivePortrait's editing sliders and official motion templates (liveportrait.md §3), not fitted.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Direction = tuple[tuple[int, int, float], ...]

EYE_KEYPOINT_INDICES: tuple[int, ...] = (11, 13, 15, 16)
"""Eye keypoints: LivePortrait's eye region minus the inert kp 18; the blink/gaze sliders move these."""
BROW_KEYPOINT_INDICES: tuple[int, ...] = (1, 2)
"""Eyebrow keypoints (LivePortrait's eyebrow slider); their y offset is the brow height (y grows down)."""
INERT_KEYPOINT_INDICES: tuple[int, ...] = (6, 8, 9, 12, 18)
"""Keypoints that never move in the official motion templates; kept at zero."""
DRIFT_KEYPOINT_INDICES: tuple[int, ...] = (0, 3, 4, 5, 7, 10)
"""Jaw/cheek/chin-like keypoints that get the slow head-like drift."""

BLINK: Direction = ((11, 1, 0.02), (15, 1, 0.02), (13, 1, -0.006), (16, 1, -0.006))
"""Eyelid closing, 0 open → 1 closed: the eye keypoints that dominate the official wink/blink templates."""

# Mouth shapes per unit of spread / rounding / extra opening (the opening itself is kp 19's y offset, read by
# ``render.mouth_opening_from_expression``). Slider directions: "lip open" 19y+, 19z+, 17y−; "grin" 20y−, 20z−,
# 14y−; "pursing" 14y+, 17z−; smile 17y+.
OPEN: Direction = ((19, 2, 0.005), (17, 1, -0.005), (20, 1, 0.006))
SPREAD: Direction = ((20, 1, -0.010), (20, 2, -0.008), (14, 1, -0.010), (17, 1, 0.004))
ROUND: Direction = ((14, 1, 0.012), (17, 2, -0.006), (19, 2, -0.004), (20, 0, 0.003))


def amount(exp: np.ndarray, direction: Direction) -> np.ndarray:
    """Least-squares amount of ``direction`` in expressions ``T×21×3`` → ``T`` (1.0 = one unit of it)."""
    exp = np.asarray(exp, dtype=np.float64)
    values = np.stack([exp[:, k, axis] for k, axis, _ in direction], axis=1)  # T×D
    weights = np.array([offset for _, _, offset in direction])
    return values @ weights / float(weights @ weights)


def mean_offset(exp: np.ndarray, keypoints: Sequence[int], axis: int) -> np.ndarray:
    """Mean offset of ``keypoints`` along ``axis`` per frame → ``T``."""
    return np.asarray(exp, dtype=np.float64)[:, list(keypoints), axis].mean(axis=1)
