"""Synthetic paired clips: a fast oscillating ``signal`` whose amplitude envelope is the slow ``gesture``.

The gesture can be read off the signal only locally (its envelope around the same time), so a model can
generate a gesture that fits a given signal only if the gesture stream attends to the signal stream.
"""

from __future__ import annotations

import math

import torch

from mmflow import StreamBatch

from .plugin import GESTURE, SIGNAL


def envelope(t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Smooth random amplitude in [0.1, 0.9]: a few slow sinusoids, ``t`` ``(b, n)`` seconds."""
    b = t.shape[0]
    freqs = torch.rand(b, 3, 1, generator=generator) * 1.2 + 0.3
    phases = torch.rand(b, 3, 1, generator=generator) * 2 * math.pi
    weights = torch.rand(b, 3, 1, generator=generator) + 0.2
    wave = (weights * torch.sin(2 * math.pi * freqs * t[:, None, :] + phases)).sum(1) / weights.sum(1)
    return 0.5 + 0.4 * wave


def make_clips(batch_size: int, seconds: float, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Clean signal ``(b, n_signal, 1)`` and gesture ``(b, n_gesture, 1)``, both roughly unit scale."""
    n_sig, n_ges = SIGNAL.num_frames(seconds), GESTURE.num_frames(seconds)
    t_sig = SIGNAL.frame_times(n_sig).expand(batch_size, -1)
    t_ges = GESTURE.frame_times(n_ges).expand(batch_size, -1)
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    amp_sig = envelope(t_sig, torch.Generator().manual_seed(seed))
    amp_ges = envelope(t_ges, torch.Generator().manual_seed(seed))  # same envelope, sampled at 15 Hz
    carrier = torch.rand(batch_size, 1, generator=generator) * 4 + 4  # 4-8 Hz
    phase = torch.rand(batch_size, 1, generator=generator) * 2 * math.pi
    signal = 2.5 * amp_sig * torch.sin(2 * math.pi * carrier * t_sig + phase)
    gesture = (amp_ges - 0.5) / 0.2
    return {"signal": signal.unsqueeze(-1), "gesture": gesture.unsqueeze(-1)}


def training_batch(batch_size: int, seconds: float, generator: torch.Generator) -> dict[str, StreamBatch]:
    """Clips with a random task per sample: gesture from signal, signal from gesture, or both generated."""
    clips = make_clips(batch_size, seconds, generator)
    task = torch.randint(0, 3, (batch_size,), generator=generator)
    given = {"signal": task == 0, "gesture": task == 1}
    return {
        name: StreamBatch.from_lengths(x, given=given[name][:, None].expand(-1, x.shape[1]).clone())
        for name, x in clips.items()
    }


def signal_envelope(signal: torch.Tensor, window: int = 13) -> torch.Tensor:
    """Amplitude envelope of a signal ``(b, n)``: moving RMS × √2 (a sinusoid's peak)."""
    padded = torch.nn.functional.pad(signal[:, None, :] ** 2, (window // 2, window // 2), mode="replicate")
    return (torch.nn.functional.avg_pool1d(padded, window, stride=1)[:, 0] * 2).sqrt()
