"""MFCC features exactly as ``python_speech_features.mfcc`` computes them with its defaults, in numpy.

SyncNet's audio branch was trained on, and is scored with, these features (``SyncNetInstance.evaluate`` calls
``python_speech_features.mfcc(audio, sample_rate)`` on 16 kHz int16 samples). The steps follow
jameslyons/python_speech_features ``base.py`` / ``sigproc.py`` at commit e280ac2b (release 0.6.1):

1. pre-emphasis ``y[0] = x[0]``, ``y[n] = x[n] - 0.97 x[n-1]``;
2. frames of 25 ms every 10 ms (400 / 160 samples at 16 kHz, rounded half up), the last one zero-padded, no
   window (rectangular); one frame when the signal is not longer than a frame;
3. power spectrum ``|rfft(frame, nfft)|² / nfft``, nfft the smallest power of two ≥ the frame (512);
4. 26 triangular mel filters from 0 Hz to half the rate on FFT bins ``floor((nfft + 1) · hz / rate)``;
5. ``log`` of the filter energies (zeros replaced by float64 ``eps``), orthonormal DCT-II, the first 13;
6. sinusoidal lifter ``1 + 11 sin(π n / 22)``;
7. coefficient 0 replaced by the log of the frame's total power-spectrum energy.

The scale of the input matters (step 7 and the log): SyncNet's reference feeds raw int16 sample values, so
callers pass int16 values (as float), not [-1, 1] floats.
"""

from __future__ import annotations

import decimal
import math

import numpy as np
from scipy.fft import dct

WINDOW_SECONDS = 0.025
STEP_SECONDS = 0.01
NUM_CEPSTRA = 13
NUM_FILTERS = 26
PREEMPHASIS = 0.97
LIFTER = 22
EPS = np.finfo(float).eps


def _round_half_up(value: float) -> int:
    return int(decimal.Decimal(value).quantize(decimal.Decimal("1"), rounding=decimal.ROUND_HALF_UP))


def fft_size(sample_rate: int, window_seconds: float = WINDOW_SECONDS) -> int:
    """The smallest power of two not shorter than one analysis window (512 at 16 kHz)."""
    return 1 << max(0, math.ceil(math.log2(window_seconds * sample_rate)))


def frame_signal(signal: np.ndarray, frame_length: int, frame_step: int) -> np.ndarray:
    """``numframes × frame_length`` overlapping frames; the tail is zero-padded to fill the last frame."""
    length = len(signal)
    count = 1 if length <= frame_length else 1 + math.ceil((length - frame_length) / frame_step)
    padded = np.concatenate([signal, np.zeros((count - 1) * frame_step + frame_length - length)])
    starts = np.arange(count)[:, None] * frame_step
    return padded[starts + np.arange(frame_length)[None, :]]


def hz_to_mel(hz):
    return 2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0)


def mel_to_hz(mel):
    return 700.0 * (10.0 ** (np.asarray(mel) / 2595.0) - 1.0)


def mel_filterbank(num_filters: int, nfft: int, sample_rate: int) -> np.ndarray:
    """``num_filters × (nfft // 2 + 1)`` triangles between mel-spaced FFT bins from 0 Hz to ``sample_rate / 2``."""
    mels = np.linspace(hz_to_mel(0.0), hz_to_mel(sample_rate / 2), num_filters + 2)
    bins = np.floor((nfft + 1) * mel_to_hz(mels) / sample_rate)
    bank = np.zeros((num_filters, nfft // 2 + 1))
    for j in range(num_filters):
        low, centre, high = bins[j], bins[j + 1], bins[j + 2]
        rising = np.arange(int(low), int(centre))
        falling = np.arange(int(centre), int(high))
        bank[j, rising] = (rising - low) / (centre - low)
        bank[j, falling] = (high - falling) / (high - centre)
    return bank


def mfcc(signal: np.ndarray, sample_rate: int = 16000) -> np.ndarray:
    """``numframes × 13`` MFCCs of a mono signal (sample values as given; SyncNet uses int16 units)."""
    signal = np.asarray(signal, dtype=np.float64)
    if signal.ndim != 1 or signal.size == 0:
        raise ValueError(f"mfcc needs a non-empty mono signal (1-D array); got shape {signal.shape}.")
    emphasised = np.append(signal[0], signal[1:] - PREEMPHASIS * signal[:-1])
    frames = frame_signal(emphasised, _round_half_up(WINDOW_SECONDS * sample_rate),
                          _round_half_up(STEP_SECONDS * sample_rate))
    nfft = fft_size(sample_rate)
    power = np.abs(np.fft.rfft(frames, nfft)) ** 2 / nfft
    energy = power.sum(axis=1)
    energy = np.where(energy == 0, EPS, energy)
    filtered = power @ mel_filterbank(NUM_FILTERS, nfft, sample_rate).T
    filtered = np.where(filtered == 0, EPS, filtered)
    cepstra = dct(np.log(filtered), type=2, axis=1, norm="ortho")[:, :NUM_CEPSTRA]
    cepstra = cepstra * (1 + (LIFTER / 2.0) * np.sin(np.pi * np.arange(NUM_CEPSTRA) / LIFTER))
    cepstra[:, 0] = np.log(energy)
    return cepstra
