"""Phoneme timings → synthetic LivePortrait facial motion at 25 fps, deterministic from a seed.

Why: to train a small JAM-Flow model offline we need speech paired with facial motion whose mouth follows the
phonemes. espeak-ng gives every phoneme's time span; this module turns that into three articulation tracks
(mouth openness, lip spread, lip rounding), writes them into the mouth keypoints of a LivePortrait expression
(``21 × xyz`` offsets) and adds what a face does besides speaking: blinks, slow drift and a per-speaker neutral
face.

Articulation is a dominance (coarticulation) model in the spirit of Cohen & Massaro: each phone has a target
per track and a dominance that is full inside its time span and decays with the distance from it. A track is
the dominance-weighted mean of the targets, lightly smoothed (the articulators have inertia), so neighbouring
phones blend instead of stepping. Bilabials and pauses dominate openness strongly (the lips must close);
velars and alveolars are weak (the jaw stays where the vowels put it); rounding spreads far (anticipatory
lip rounding across consonants).

Keypoint mapping (LivePortrait's expression space; liveportrait.md §3): mouth opening is kp 19's y offset,
through the same mapping the fallback renderer reads (``render.expression_for_opening``), so
``mouth_opening_from_expression`` of the result equals :func:`openness_from_phones`. Spread and rounding move
kps 14, 17 and 20 along the directions of LivePortrait's own "grin" and "pursing" editing sliders. All speech
motion stays in the four mouth keypoints; the other 17 (the condition e_rest) carry only blinks, drift and the
speaker's neutral face, so the condition does not leak the lip movements. The eye and mouth directions and
magnitudes are heuristics read off the official editing sliders and motion templates, not fitted to data.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from mmflow_motion_liveportrait.expression_layout import (  # noqa: F401  (re-exported for the corpus's users)
    BROW_KEYPOINT_INDICES,
    DRIFT_KEYPOINT_INDICES,
    EYE_KEYPOINT_INDICES,
    INERT_KEYPOINT_INDICES,
)
from mmflow_motion_liveportrait.expression_layout import OPEN as _OPEN_DIRECTIONS
from mmflow_motion_liveportrait.expression_layout import ROUND as _ROUND_DIRECTIONS
from mmflow_motion_liveportrait.expression_layout import SPREAD as _SPREAD_DIRECTIONS
from mmflow_motion_liveportrait.idle import add_idle_motion, blink_curve, blink_times  # noqa: F401
from mmflow_motion_liveportrait.keypoints import NUM_KEYPOINTS
from mmflow_motion_liveportrait.plugin import MOTION
from mmflow_motion_liveportrait.render import CLOSED_MOUTH_EXP_Y, MOUTH_OPEN_KEYPOINT, OPEN_MOUTH_EXP_SPAN

logger = logging.getLogger(__name__)

FRAME_RATE = float(MOTION.frame_rate)  # the motion stream's rate (its registered spec)
"""Motion frames per second (LivePortrait's default output rate)."""

_SMOOTH_SECONDS = 0.02  # articulator inertia: Gaussian smoothing of the tracks
_GRID_RATE = 400.0  # tracks are computed on this fine grid, then sampled at the frame times
_MIN_CLOSURE_SECONDS = 0.07  # espeak marks a bilabial by its burst (often < 20 ms); lips close for longer


# --------------------------------------------------------------------------------------------------------------
# Visemes: espeak mnemonic → articulation targets
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Viseme:
    """Articulation targets of one phone class and how strongly it imposes them on its neighbours.

    openness: jaw/lip opening in [0, 1]. spread: lip widening (> 0, as in "ee") or narrowing (< 0).
    rounding: lip protrusion/rounding in [0, 1]. open_dominance / shape_dominance: weight of the openness and of
    the spread/rounding targets inside the phone. reach: seconds over which the dominance decays outside it.
    """

    name: str
    openness: float
    spread: float
    rounding: float
    open_dominance: float = 1.0
    shape_dominance: float = 1.0
    reach: float = 0.045


PAUSE = Viseme("pause", 0.0, 0.0, 0.0, open_dominance=6.0, shape_dominance=1.0, reach=0.05)
BILABIAL = Viseme("bilabial", 0.0, 0.0, 0.0, open_dominance=40.0, shape_dominance=0.5, reach=0.03)
LABIODENTAL = Viseme("labiodental", 0.08, 0.15, 0.0, open_dominance=15.0, shape_dominance=0.5, reach=0.03)
DENTAL = Viseme("dental", 0.22, 0.15, 0.0, open_dominance=2.0, shape_dominance=0.3, reach=0.035)
ALVEOLAR = Viseme("alveolar", 0.25, 0.1, 0.0, open_dominance=0.8, shape_dominance=0.2, reach=0.035)
SIBILANT = Viseme("sibilant", 0.15, 0.35, 0.0, open_dominance=2.5, shape_dominance=0.5, reach=0.035)
POSTALVEOLAR = Viseme("postalveolar", 0.2, -0.2, 0.6, open_dominance=2.0, shape_dominance=1.5, reach=0.04)
RHOTIC = Viseme("rhotic", 0.25, -0.1, 0.45, open_dominance=0.8, shape_dominance=1.0, reach=0.04)
GLIDE_W = Viseme("w", 0.12, -0.4, 1.0, open_dominance=3.0, shape_dominance=3.0, reach=0.05)
GLIDE_J = Viseme("j", 0.22, 0.4, 0.0, open_dominance=1.0, shape_dominance=1.0, reach=0.04)
BACK = Viseme("velar/glottal", 0.3, 0.0, 0.0, open_dominance=0.4, shape_dominance=0.1, reach=0.03)

_VOWEL = {"open_dominance": 1.5, "shape_dominance": 1.5, "reach": 0.06}
OPEN = Viseme("open", 0.95, 0.1, 0.0, **_VOWEL)
TRAP = Viseme("trap", 0.85, 0.3, 0.0, **_VOWEL)
LOT = Viseme("lot", 0.85, 0.0, 0.25, **_VOWEL)
OPEN_ROUND = Viseme("open-round", 0.72, -0.2, 0.7, **_VOWEL)
STRUT = Viseme("strut", 0.65, 0.05, 0.0, **_VOWEL)
MID_FRONT = Viseme("mid-front", 0.55, 0.35, 0.0, **_VOWEL)
MID_ROUND = Viseme("mid-round", 0.5, -0.2, 0.75, **_VOWEL)
SCHWA = Viseme("schwa", 0.42, 0.0, 0.0, **_VOWEL)
NURSE = Viseme("nurse", 0.42, -0.1, 0.35, **_VOWEL)
CLOSE_FRONT = Viseme("close-front", 0.3, 0.85, 0.0, **_VOWEL)
NEAR_CLOSE_FRONT = Viseme("near-close-front", 0.35, 0.55, 0.0, **_VOWEL)
CLOSE_BACK = Viseme("close-back", 0.25, -0.45, 1.0, **_VOWEL)
NEAR_CLOSE_BACK = Viseme("near-close-back", 0.35, -0.25, 0.7, **_VOWEL)

# espeak-ng English mnemonics (ph_english, ph_english_us). Diphthongs are a sequence of targets spread over
# the phone's span. Unknown symbols fall back to their longest known prefix, then to a vowel/consonant guess.
_VISEMES: dict[str, tuple[Viseme, ...]] = {
    **{s: (PAUSE,) for s in ("_", "_:", "_!", "_|", "_;", "||", "|", "#")},
    **{s: (BILABIAL,) for s in ("p", "b", "m", "m-")},
    **{s: (LABIODENTAL,) for s in ("f", "v")},
    **{s: (DENTAL,) for s in ("T", "D")},
    **{s: (ALVEOLAR,) for s in ("t", "d", "n", "l", "t#", "d#", "t2", "n-", "l/", "l#", "L")},
    **{s: (SIBILANT,) for s in ("s", "z")},
    **{s: (POSTALVEOLAR,) for s in ("S", "Z", "tS", "dZ")},
    **{s: (RHOTIC,) for s in ("r", "r-", "R", "*")},
    "w": (GLIDE_W,),
    "W": (GLIDE_W,),
    "j": (GLIDE_J,),
    **{s: (BACK,) for s in ("k", "g", "N", "h", "?", "x", "C", "n^")},
    **{s: (OPEN,) for s in ("aa", "A:", "A", "A@", "A#", "a#")},
    "a": (TRAP,),
    "0": (LOT,),
    **{s: (OPEN_ROUND,) for s in ("O", "O:", "O@", "o@", "o")},
    "V": (STRUT,),
    **{s: (MID_FRONT,) for s in ("E", "e")},
    **{s: (SCHWA,) for s in ("@", "@2", "@5", "3", "@#")},
    **{s: (NURSE,) for s in ("3:", "@r", "3r")},
    **{s: (CLOSE_FRONT,) for s in ("i", "i:")},
    **{s: (NEAR_CLOSE_FRONT,) for s in ("I", "I2", "I#", "y")},
    **{s: (CLOSE_BACK,) for s in ("u", "u:", "u:#")},
    "U": (NEAR_CLOSE_BACK,),
    "aI": (OPEN, NEAR_CLOSE_FRONT),
    "aI@": (OPEN, NEAR_CLOSE_FRONT, SCHWA),
    "aI3": (OPEN, NEAR_CLOSE_FRONT, SCHWA),
    "aU": (OPEN, NEAR_CLOSE_BACK),
    "aU@": (OPEN, NEAR_CLOSE_BACK, SCHWA),
    "eI": (MID_FRONT, NEAR_CLOSE_FRONT),
    "e@": (MID_FRONT, SCHWA),
    "i@": (NEAR_CLOSE_FRONT, SCHWA),
    "i@3": (NEAR_CLOSE_FRONT, SCHWA),
    "oU": (MID_ROUND, NEAR_CLOSE_BACK),
    "OI": (OPEN_ROUND, NEAR_CLOSE_FRONT),
    "U@": (NEAR_CLOSE_BACK, SCHWA),
    "@L": (SCHWA, ALVEOLAR),
}
_STRESS_MARKS = "'\",%=ˈˌ"
_VOWEL_LETTERS = set("aeiouAEIOUVy03@")


@lru_cache(maxsize=1024)
def visemes_for(symbol: str) -> tuple[Viseme, ...]:
    """The viseme targets of one espeak mnemonic (stress marks ignored); a pause for empty/silence symbols."""
    name = symbol.strip().lstrip(_STRESS_MARKS)
    if not name or name.startswith("_") or name.startswith("<"):
        return (PAUSE,)
    for end in range(len(name), 0, -1):
        if name[:end] in _VISEMES:
            return _VISEMES[name[:end]]
    guess = (SCHWA,) if name[0] in _VOWEL_LETTERS else (ALVEOLAR,)
    logger.debug("no viseme for espeak symbol %r; using %s", symbol, guess[0].name)
    return guess


# --------------------------------------------------------------------------------------------------------------
# Articulation tracks
# --------------------------------------------------------------------------------------------------------------


def _phone_fields(phone: Any) -> tuple[str, float, float]:
    """``Phone(symbol, start, end)`` or a ``(symbol, start, end)`` tuple → its three fields."""
    if hasattr(phone, "symbol"):
        return str(phone.symbol), float(phone.start), float(phone.end)
    symbol, start, end = phone
    return str(symbol), float(start), float(end)


def _segments(phones: Iterable[Any], end_time: float) -> list[tuple[float, float, Viseme]]:
    """Phones → ``(start, end, viseme)`` spans: diphthongs split, closures widened, silence added at the ends."""
    segments: list[tuple[float, float, Viseme]] = []
    last_end = 0.0
    for phone in phones:
        symbol, start, end = _phone_fields(phone)
        if end < start:
            raise ValueError(f"phone {symbol!r} ends ({end:.3f} s) before it starts ({start:.3f} s)")
        if end - start <= 0:
            continue
        targets = visemes_for(symbol)
        step = (end - start) / len(targets)
        for k, viseme in enumerate(targets):
            seg_start, seg_end = start + k * step, start + (k + 1) * step
            if viseme.open_dominance >= LABIODENTAL.open_dominance and seg_end - seg_start < _MIN_CLOSURE_SECONDS:
                centre, half = (seg_start + seg_end) / 2, _MIN_CLOSURE_SECONDS / 2
                seg_start, seg_end = centre - half, centre + half
            segments.append((seg_start, seg_end, viseme))
        last_end = max(last_end, end)
    first_start = min((s for s, _, _ in segments), default=0.0)
    # The face is at rest before the first and after the last phone.
    segments.insert(0, (min(first_start, 0.0) - 1.0, first_start, PAUSE))
    segments.append((last_end, max(end_time, last_end) + 1.0, PAUSE))
    return segments


def _gaussian_smooth(track: np.ndarray, sigma_samples: float) -> np.ndarray:
    """Smooth along axis 0 with a normalised Gaussian, edges held (no darkening towards the ends)."""
    radius = max(1, int(round(3 * sigma_samples)))
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (offsets / sigma_samples) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(track, ((radius, radius), (0, 0)), mode="edge")
    return np.stack([np.convolve(padded[:, c], kernel, mode="valid") for c in range(track.shape[1])], axis=1)


def articulation_from_phones(phones: Sequence[Any], num_frames: int, frame_rate: float = FRAME_RATE) -> np.ndarray:
    """Phones (with start/end seconds) → ``(num_frames, 3)`` float32 tracks: openness, spread, rounding.

    Frame ``f`` is the instant ``f / frame_rate`` (the start time mmflow gives a frame). Frames past the last
    phone are at rest (mouth closed).
    """
    if num_frames < 0:
        raise ValueError(f"num_frames must be >= 0, got {num_frames}")
    if num_frames == 0:
        return np.zeros((0, 3), dtype=np.float32)
    end_time = (num_frames - 1) / frame_rate
    segments = _segments(phones, end_time)
    margin = 4 * _SMOOTH_SECONDS
    grid = np.arange(-margin, end_time + margin + 1.0 / _GRID_RATE, 1.0 / _GRID_RATE)  # G
    starts = np.array([s for s, _, _ in segments])
    ends = np.array([e for _, e, _ in segments])
    visemes = [v for _, _, v in segments]
    # Only segments near the grid matter; this keeps the G × P matrix small for long clips.
    near = (ends > grid[0] - 0.5) & (starts < grid[-1] + 0.5)
    starts, ends = starts[near], ends[near]
    visemes = [v for v, keep in zip(visemes, near, strict=True) if keep]
    reach = np.array([v.reach for v in visemes])
    distance = np.maximum(starts[None, :] - grid[:, None], 0) + np.maximum(grid[:, None] - ends[None, :], 0)
    falloff = np.exp(-((distance / reach[None, :]) ** 2))  # G × P, 1 inside each span
    open_weight = falloff * np.array([v.open_dominance for v in visemes])[None, :]
    shape_weight = falloff * np.array([v.shape_dominance for v in visemes])[None, :]
    openness = open_weight @ np.array([v.openness for v in visemes]) / open_weight.sum(1)
    spread = shape_weight @ np.array([v.spread for v in visemes]) / shape_weight.sum(1)
    rounding = shape_weight @ np.array([v.rounding for v in visemes]) / shape_weight.sum(1)
    tracks = _gaussian_smooth(np.stack([openness, spread, rounding], axis=1), _SMOOTH_SECONDS * _GRID_RATE)
    times = np.arange(num_frames) / frame_rate
    sampled = np.stack([np.interp(times, grid, tracks[:, c]) for c in range(3)], axis=1)
    sampled[:, 0] = np.clip(sampled[:, 0], 0.0, 1.0)
    return sampled.astype(np.float32)


def openness_from_phones(phones: Sequence[Any], num_frames: int, frame_rate: float = FRAME_RATE) -> np.ndarray:
    """The ground-truth mouth-openness curve ``(num_frames,)`` in [0, 1] (the target for lip-sync metrics)."""
    return articulation_from_phones(phones, num_frames, frame_rate)[:, 0]


# --------------------------------------------------------------------------------------------------------------
# Face: speaker neutral, blinks, drift, mouth keypoints
# --------------------------------------------------------------------------------------------------------------

# LivePortrait's closed-lip reference expression (lip_array.pkl, its largest entries): the shared neutral face.
_NEUTRAL = np.zeros((NUM_KEYPOINTS, 3), dtype=np.float64)
_NEUTRAL[MOUTH_OPEN_KEYPOINT, 1] = CLOSED_MOUTH_EXP_Y
_NEUTRAL[19, 2], _NEUTRAL[20, 1], _NEUTRAL[20, 2] = -0.0026, 0.0056, 0.0027
_NEUTRAL[7, 1], _NEUTRAL[14, 1] = 0.0026, -0.0018

# Mouth directions (per unit of openness / spread / rounding) and the idle face (blinks, drift, gaze) come
# from the motion plugin (expression_layout.py, idle.py), which the fallback renderer reads back.


def _speaker_seed(speaker: int | str) -> int:
    """A stable integer for a speaker id or name (``hash()`` of a str changes between processes)."""
    if isinstance(speaker, str):
        return zlib.crc32(speaker.encode())
    return int(speaker)


@dataclass(frozen=True)
class SpeakerStyle:
    """What stays the same across a speaker's clips: a neutral face and how much the lips spread/round."""

    neutral: np.ndarray  # 21 × 3
    spread_gain: float
    round_gain: float
    blink_gain: float


@lru_cache(maxsize=256)
def speaker_style(speaker: int | str = 0) -> SpeakerStyle:
    """The seeded style of ``speaker``: small offsets on the keypoints that move, and articulation gains."""
    rng = np.random.default_rng([0x5EED_FACE, _speaker_seed(speaker)])
    neutral = _NEUTRAL.copy()
    moving = [k for k in range(NUM_KEYPOINTS) if k not in INERT_KEYPOINT_INDICES]
    neutral[moving, :2] += rng.normal(0.0, 0.003, size=(len(moving), 2))
    for k in (10, 14, 17, 20):  # the only keypoints with a z component in the official templates
        neutral[k, 2] += rng.normal(0.0, 0.002)
    neutral[MOUTH_OPEN_KEYPOINT, 1] = CLOSED_MOUTH_EXP_Y  # closed must read as closed for the renderer
    neutral.setflags(write=False)
    return SpeakerStyle(
        neutral=neutral,
        spread_gain=float(rng.uniform(0.8, 1.2)),
        round_gain=float(rng.uniform(0.8, 1.2)),
        blink_gain=float(rng.uniform(0.85, 1.0)),
    )


def motion_from_phones(
    phones: Sequence[Any],
    num_frames: int,
    seed: int,
    speaker: int | str = 0,
    frame_rate: float = FRAME_RATE,
) -> np.ndarray:
    """Phones → LivePortrait expression ``(num_frames, 21, 3)`` float32.

    The mouth (kps 14, 17, 19, 20) follows the articulation tracks; kp 19's y offset encodes the openness
    exactly as the fallback renderer reads it. The other keypoints carry the speaker's neutral face, blinks and
    slow drift drawn from ``seed``. Same arguments, same array.
    """
    tracks = articulation_from_phones(phones, num_frames, frame_rate).astype(np.float64)
    openness, spread, rounding = tracks[:, 0], tracks[:, 1], tracks[:, 2]
    style = speaker_style(speaker)
    rng = np.random.default_rng([0xB11_4C, int(seed) & 0xFFFFFFFF, _speaker_seed(speaker) & 0xFFFFFFFF])
    exp = np.broadcast_to(style.neutral, (num_frames, NUM_KEYPOINTS, 3)).copy()

    exp[:, MOUTH_OPEN_KEYPOINT, 1] = CLOSED_MOUTH_EXP_Y + OPEN_MOUTH_EXP_SPAN * openness
    for track, gain, directions in (
        (openness, 1.0, _OPEN_DIRECTIONS),
        (spread, style.spread_gain, _SPREAD_DIRECTIONS),
        (rounding, style.round_gain, _ROUND_DIRECTIONS),
    ):
        for k, axis, offset in directions:
            exp[:, k, axis] += gain * offset * track

    add_idle_motion(exp, rng, frame_rate, style.blink_gain)
    return exp.astype(np.float32)
