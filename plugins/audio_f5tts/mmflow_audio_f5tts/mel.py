"""The F5-TTS / Vocos ("vocos" type) log-mel front end, in plain torch.

F5-TTS conditions on, and its Vocos vocoder decodes, a natural-log magnitude mel spectrogram of mono
24 kHz audio. This module computes the same numbers as the reference
(``torchaudio.transforms.MelSpectrogram`` followed by ``log(clamp(x, 1e-5))``) without depending on
torchaudio or librosa at run time: ``torch.stft`` plus an HTK mel filterbank built here.

All audio-format constants of the speech stream live here so other modules import one definition.
"""

from __future__ import annotations

import math
from fractions import Fraction

import torch
from torch import nn

SAMPLE_RATE = 24_000
"""Sample rate (Hz) of every waveform the model sees or produces."""
N_FFT = 1024
WIN_LENGTH = 1024
HOP_LENGTH = 256
N_MELS = 100
FRAME_RATE = Fraction(SAMPLE_RATE, HOP_LENGTH)
"""Mel frames per second, exactly 375/4 = 93.75."""
LOG_CLAMP = 1e-5
"""Mel magnitudes are clamped to at least this before the natural log (log-mel floor ≈ -11.51)."""


def hz_to_mel_htk(freq: float | torch.Tensor) -> float | torch.Tensor:
    """HTK mel scale: ``2595 · log10(1 + f / 700)``."""
    if isinstance(freq, torch.Tensor):
        return 2595.0 * torch.log10(1.0 + freq / 700.0)
    return 2595.0 * math.log10(1.0 + freq / 700.0)


def mel_to_hz_htk(mel: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`hz_to_mel_htk`."""
    return 700.0 * (torch.pow(10.0, mel / 2595.0) - 1.0)


def mel_filterbank(
    *,
    n_freqs: int = N_FFT // 2 + 1,
    n_mels: int = N_MELS,
    sample_rate: int = SAMPLE_RATE,
    f_min: float = 0.0,
    f_max: float | None = None,
) -> torch.Tensor:
    """Triangular HTK mel filters without area normalisation, shape ``[n_freqs, n_mels]`` (float32).

    Same definition as torchaudio's default (``mel_scale="htk"``, ``norm=None``): ``n_mels + 2`` points
    equally spaced on the mel scale between ``f_min`` and ``f_max`` (default Nyquist); filter ``m`` rises
    linearly in Hz from point ``m`` to ``m+1`` and falls to ``m+2``, peak value 1. Computed in float64.
    """
    f_max = sample_rate / 2 if f_max is None else f_max
    if not 0.0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(
            f"mel_filterbank: need 0 <= f_min < f_max <= sample_rate/2, got f_min={f_min}, f_max={f_max}, "
            f"sample_rate={sample_rate}"
        )
    bin_freqs = torch.linspace(0.0, float(sample_rate // 2), n_freqs, dtype=torch.float64)
    mel_points = torch.linspace(hz_to_mel_htk(f_min), hz_to_mel_htk(f_max), n_mels + 2, dtype=torch.float64)
    hz_points = mel_to_hz_htk(mel_points)
    lower, centre, upper = hz_points[:-2], hz_points[1:-1], hz_points[2:]
    rising = (bin_freqs[:, None] - lower[None, :]) / (centre - lower)[None, :]
    falling = (upper[None, :] - bin_freqs[:, None]) / (upper - centre)[None, :]
    return torch.clamp(torch.minimum(rising, falling), min=0.0).to(torch.float32)


def num_frames(num_samples: int) -> int:
    """Mel frames for ``num_samples`` samples with centred STFT frames: ``1 + num_samples // HOP_LENGTH``."""
    if num_samples < 0:
        raise ValueError(f"num_frames: num_samples must be >= 0, got {num_samples}")
    return 1 + num_samples // HOP_LENGTH


def to_time_major(mel: torch.Tensor) -> torch.Tensor:
    """``[B, n_mels, frames]`` (F5-TTS / Vocos layout) → ``[B, frames, n_mels]`` (mmflow stream layout)."""
    if mel.ndim != 3:
        raise ValueError(
            f"to_time_major: expected a [B, n_mels, frames] tensor, got shape {tuple(mel.shape)}"
        )
    return mel.transpose(1, 2)


def to_channel_first(mel: torch.Tensor) -> torch.Tensor:
    """``[B, frames, n_mels]`` (mmflow stream layout) → ``[B, n_mels, frames]`` (what Vocos decodes)."""
    if mel.ndim != 3:
        raise ValueError(
            f"to_channel_first: expected a [B, frames, n_mels] tensor, got shape {tuple(mel.shape)}"
        )
    return mel.transpose(1, 2)


class MelSpectrogram(nn.Module):
    """Log-mel spectrogram of mono 24 kHz audio, numerically matching F5-TTS's ``MelSpec(mel_spec_type="vocos")``.

    Periodic Hann window of 1024, hop 256, centred frames with reflect padding, magnitude (power 1),
    100 HTK mel bins, ``log(clamp(mel, 1e-5))``. The window and filterbank are non-persistent buffers, so
    the module adds no keys to a checkpoint (like F5-TTS, whose checkpoints carry no mel weights).

    Input ``[samples]``, ``[B, samples]`` or ``[B, 1, samples]``; output ``[B, 100, 1 + samples // 256]``
    float32 (channel-first, as F5-TTS/Vocos). Use :meth:`time_major` or :func:`to_time_major` for the
    ``[B, frames, 100]`` layout of mmflow streams.
    """

    def __init__(self) -> None:
        super().__init__()
        self.sample_rate = SAMPLE_RATE
        self.n_fft = N_FFT
        self.win_length = WIN_LENGTH
        self.hop_length = HOP_LENGTH
        self.n_mels = N_MELS
        self.register_buffer("window", torch.hann_window(WIN_LENGTH, periodic=True), persistent=False)
        self.register_buffer("filterbank", mel_filterbank(), persistent=False)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        wave = self._as_batch(waveform)
        spec = torch.stft(
            wave,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=self.window,
            center=True,
            pad_mode="reflect",
            normalized=False,
            onesided=True,
            return_complex=True,
        ).abs()
        mel = torch.matmul(spec.transpose(1, 2), self.filterbank).transpose(1, 2)
        return torch.log(torch.clamp(mel, min=LOG_CLAMP))

    def time_major(self, waveform: torch.Tensor) -> torch.Tensor:
        """Same as ``forward`` but returns ``[B, frames, 100]`` (the layout mmflow streams use)."""
        return to_time_major(self(waveform))

    def _as_batch(self, waveform: torch.Tensor) -> torch.Tensor:
        if not isinstance(waveform, torch.Tensor):
            raise TypeError(
                f"MelSpectrogram: expected a torch.Tensor waveform, got {type(waveform).__name__}"
            )
        if waveform.ndim == 3 and waveform.shape[1] == 1:
            waveform = waveform[:, 0]
        elif waveform.ndim == 1:
            waveform = waveform[None]
        if waveform.ndim != 2:
            raise ValueError(
                "MelSpectrogram: expected mono audio shaped [samples], [B, samples] or [B, 1, samples], got "
                f"shape {tuple(waveform.shape)}; mix multi-channel audio down first (audio_io.to_mono)"
            )
        if waveform.shape[-1] <= self.n_fft // 2:
            raise ValueError(
                f"MelSpectrogram: need more than {self.n_fft // 2} samples for reflect padding, got "
                f"{waveform.shape[-1]}"
            )
        if not waveform.is_floating_point():
            raise TypeError(f"MelSpectrogram: expected a floating-point waveform, got dtype {waveform.dtype}")
        return waveform.to(torch.float32)
