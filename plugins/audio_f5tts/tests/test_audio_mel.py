"""The mel front end against F5-TTS's vocos-type ``MelSpec`` (torchaudio), plus shapes and frame counts."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch
from mmflow_audio_f5tts import mel as mel_module
from mmflow_audio_f5tts.mel import (
    FRAME_RATE,
    HOP_LENGTH,
    N_MELS,
    SAMPLE_RATE,
    MelSpectrogram,
    mel_filterbank,
    num_frames,
    to_channel_first,
    to_time_major,
)

PARITY_TOL = 1e-4  # max abs difference on log-mel


def _sines(seconds: float) -> torch.Tensor:
    t = torch.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    low = 0.5 * torch.sin(2 * math.pi * 440.0 * t)
    mix = 0.3 * torch.sin(2 * math.pi * 183.0 * t) + 0.2 * torch.sin(2 * math.pi * 3150.5 * t + 0.3)
    return torch.stack([low, mix])


@pytest.mark.parametrize("kind", ["random", "sine"])
def test_log_mel_matches_f5_tts_reference(f5_reference, kind):
    if kind == "random":
        wave = 0.3 * torch.randn(2, 31_000, generator=torch.Generator().manual_seed(0))
    else:
        wave = _sines(1.3)
    expected = f5_reference.MelSpec(mel_spec_type="vocos")(wave)
    actual = MelSpectrogram()(wave)
    assert actual.shape == expected.shape
    assert (actual - expected).abs().max().item() < PARITY_TOL


def test_filterbank_matches_torchaudio():
    functional = pytest.importorskip("torchaudio.functional")
    expected = functional.melscale_fbanks(513, 0.0, 12_000.0, N_MELS, SAMPLE_RATE, norm=None, mel_scale="htk")
    assert (mel_filterbank() - expected).abs().max().item() < 1e-5  # torchaudio computes in float32


@pytest.mark.parametrize("samples", [513, 24_000, 24_255, 24_256, 48_000 + 17])
def test_frame_count_follows_duration(samples):
    out = MelSpectrogram()(torch.zeros(samples).uniform_(-0.1, 0.1))
    assert out.shape == (1, N_MELS, 1 + samples // HOP_LENGTH) == (1, N_MELS, num_frames(samples))


def test_frame_rate_constant():
    assert Fraction(375, 4) == FRAME_RATE
    assert float(FRAME_RATE) == 93.75
    assert num_frames(10 * SAMPLE_RATE) == 1 + int(10 * FRAME_RATE)


def test_input_layouts_and_time_major_helper():
    wave = 0.1 * torch.randn(2, 5_000, generator=torch.Generator().manual_seed(1))
    module = MelSpectrogram()
    batched = module(wave)
    assert torch.equal(module(wave[:, None]), batched)
    assert torch.equal(module(wave[0]), batched[:1])
    time_major = module.time_major(wave)
    assert time_major.shape == (2, batched.shape[-1], N_MELS)
    assert torch.equal(to_time_major(batched), time_major)
    assert torch.equal(to_channel_first(time_major), batched)


def test_silence_hits_the_log_floor_and_module_has_no_checkpoint_keys():
    module = MelSpectrogram()
    assert torch.allclose(
        module(torch.zeros(4_000)), torch.full((1, N_MELS, 16), math.log(mel_module.LOG_CLAMP))
    )
    assert module.state_dict() == {}


def test_bad_inputs_raise_clear_errors():
    module = MelSpectrogram()
    with pytest.raises(ValueError, match="mono"):
        module(torch.zeros(1, 2, 4_000))
    with pytest.raises(TypeError, match="floating-point"):
        module(torch.zeros(4_000, dtype=torch.int16))
    with pytest.raises(ValueError, match="more than 512 samples"):
        module(torch.zeros(100))
    with pytest.raises(ValueError, match=r"\[B, n_mels, frames\]"):
        to_time_major(torch.zeros(100, 5))
