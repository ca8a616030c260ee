"""Synthetic clips of the three streams as a ``datasets.Dataset``, the row layout mmflow's trainer reads.

One row per clip: ``beat`` ``(T_40Hz, 2)``, ``pose`` ``(T_10Hz, 3)``, ``glow`` ``(T_8Hz, 1)`` float32 (time-major
``Array2D``), and ``seconds``. All three follow one random envelope, sampled at each stream's own rate.
"""

from __future__ import annotations

import math

import datasets
import numpy as np

from .plugin import BEAT, GLOW, POSE


def _envelope(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    freqs, phases = rng.uniform(0.3, 1.2, 2), rng.uniform(0, 2 * math.pi, 2)
    return 0.5 + 0.4 * np.sin(2 * math.pi * freqs[:, None] * t + phases[:, None]).mean(0)


def clip(seconds: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One clip of ``seconds``: every stream from the same envelope at its own frame times."""
    envelope_seed = int(rng.integers(2**62))
    carrier, phase = rng.uniform(3, 6), rng.uniform(0, 2 * math.pi)
    out = {}
    for spec in (BEAT, POSE, GLOW):
        t = np.arange(spec.num_frames(seconds)) / float(spec.frame_rate)
        amp = _envelope(t, np.random.default_rng(envelope_seed))
        if spec is BEAT:
            angle = 2 * math.pi * carrier * t + phase
            values = 2 * amp[:, None] * np.stack([np.sin(angle), np.cos(angle)], 1)
        elif spec is POSE:
            values = np.stack([(amp - 0.5) / 0.2, np.sin(4 * amp), np.cos(4 * amp)], 1)
        else:
            values = ((amp - 0.5) / 0.2)[:, None]
        out[spec.name] = values.astype(np.float32)
    return out


def build_dataset(num_clips: int = 32, min_seconds: float = 1.0, max_seconds: float = 2.0, seed: int = 0):
    """``num_clips`` clips with durations uniform on the 0.5 s grid the three rates share."""
    if not 0 < min_seconds <= max_seconds:
        raise ValueError(f"need 0 < min_seconds <= max_seconds, got {min_seconds}, {max_seconds}")
    rng = np.random.default_rng(seed)
    rows = {"beat": [], "pose": [], "glow": [], "seconds": []}
    for _ in range(num_clips):
        seconds = float(rng.integers(round(min_seconds * 2), round(max_seconds * 2) + 1)) / 2
        for name, values in clip(seconds, rng).items():
            rows[name].append(values)
        rows["seconds"].append(seconds)
    features = datasets.Features({
        "beat": datasets.Array2D(shape=(None, BEAT.channels), dtype="float32"),
        "pose": datasets.Array2D(shape=(None, POSE.channels), dtype="float32"),
        "glow": datasets.Array2D(shape=(None, GLOW.channels), dtype="float32"),
        "seconds": datasets.Value("float32"),
    })
    return datasets.Dataset.from_dict(rows, features=features)
