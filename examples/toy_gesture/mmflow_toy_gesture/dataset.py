"""The toy clips as a ``datasets.Dataset``, the row layout mmflow's trainer reads.

One row per clip: ``signal`` ``(T_signal, 1)`` and ``gesture`` ``(T_gesture, 1)`` float32, time-major
(``Array2D(shape=(None, 1))``: ``datasets`` lets only the first dimension vary), and ``seconds``. Clip
durations vary, so batches need padding and length bucketing pays off.
"""

from __future__ import annotations

import datasets
import torch

from .data import make_clips
from .plugin import GESTURE, SIGNAL


def build_dataset(num_clips: int = 64, min_seconds: float = 1.0, max_seconds: float = 2.0, seed: int = 0):
    """``num_clips`` clips with durations uniform in [min_seconds, max_seconds] (on the 15 Hz gesture grid).

    Built in memory with ``Dataset.from_dict`` (no cache folder, so no stale-cache surprise, and every rank
    of a distributed run builds the same rows from the seed).
    """
    if not 0 < min_seconds <= max_seconds:
        raise ValueError(f"need 0 < min_seconds <= max_seconds, got {min_seconds}, {max_seconds}")
    generator = torch.Generator().manual_seed(seed)
    rows = {"signal": [], "gesture": [], "seconds": []}
    low, high = GESTURE.num_frames(min_seconds), GESTURE.num_frames(max_seconds)
    for _ in range(num_clips):
        frames = int(torch.randint(low, high + 1, (1,), generator=generator))
        seconds = GESTURE.seconds(frames)
        clip = make_clips(1, seconds, generator)
        rows["signal"].append(clip["signal"][0].numpy())
        rows["gesture"].append(clip["gesture"][0].numpy())
        rows["seconds"].append(seconds)
    features = datasets.Features({
        "signal": datasets.Array2D(shape=(None, SIGNAL.channels), dtype="float32"),
        "gesture": datasets.Array2D(shape=(None, GESTURE.channels), dtype="float32"),
        "seconds": datasets.Value("float32"),
    })
    return datasets.Dataset.from_dict(rows, features=features)
