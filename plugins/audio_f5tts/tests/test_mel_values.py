"""The mel front end's pieces by value, where the mutation study (benchmarks/mutation.py) found them unguarded:
the HTK scale on tensors, the filterbank against a by-hand float64 reference for other settings than the
default, input checks and dtypes."""

from __future__ import annotations

import math

import pytest
import torch
from mmflow_audio_f5tts.mel import MelSpectrogram, hz_to_mel_htk, mel_filterbank, mel_to_hz_htk, num_frames


def test_htk_scale_on_tensors_and_floats():
    freqs = torch.tensor([0.0, 700.0, 1000.0, 12000.0], dtype=torch.float64)
    by_hand = torch.tensor([2595.0 * math.log10(1.0 + f / 700.0) for f in freqs.tolist()], dtype=torch.float64)
    torch.testing.assert_close(hz_to_mel_htk(freqs), by_hand, rtol=0, atol=1e-9)
    assert hz_to_mel_htk(700.0) == pytest.approx(2595.0 * math.log10(2.0))
    torch.testing.assert_close(mel_to_hz_htk(hz_to_mel_htk(freqs)), freqs, rtol=1e-12, atol=1e-9)


def _filterbank_by_hand(n_freqs, n_mels, sample_rate, f_min, f_max):
    mel = lambda f: 2595.0 * math.log10(1.0 + f / 700.0)  # noqa: E731
    hz = lambda m: 700.0 * (10.0 ** (m / 2595.0) - 1.0)  # noqa: E731
    lo, hi = mel(f_min), mel(f_max)
    points = [hz(lo + (hi - lo) * i / (n_mels + 1)) for i in range(n_mels + 2)]
    nyquist = float(sample_rate // 2)
    out = torch.zeros(n_freqs, n_mels, dtype=torch.float64)
    for k in range(n_freqs):
        f = nyquist * k / (n_freqs - 1)
        for m in range(n_mels):
            lower, centre, upper = points[m], points[m + 1], points[m + 2]
            out[k, m] = max(0.0, min((f - lower) / (centre - lower), (upper - f) / (upper - centre)))
    return out.float()


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"n_freqs": 10, "n_mels": 4, "sample_rate": 8001, "f_min": 0.0, "f_max": None},
     {"n_freqs": 33, "n_mels": 6, "sample_rate": 16000, "f_min": 100.0, "f_max": 7000.0},
     {"n_freqs": 1000, "n_mels": 128, "sample_rate": 44100}],  # bin spacing not exact in float32
)
def test_filterbank_equals_the_formula(kwargs):
    settings = {"n_freqs": 513, "n_mels": 100, "sample_rate": 24000, "f_min": 0.0, "f_max": None, **kwargs}
    f_max = settings["sample_rate"] / 2 if settings["f_max"] is None else settings["f_max"]
    by_hand = _filterbank_by_hand(settings["n_freqs"], settings["n_mels"], settings["sample_rate"],
                                  settings["f_min"], f_max)
    bank = mel_filterbank(**settings)
    assert bank.dtype == torch.float32 and bank.shape == by_hand.shape
    torch.testing.assert_close(bank, by_hand, rtol=0, atol=2e-7)


def test_filterbank_range_checks():
    for f_min, f_max in [(1000.0, 1000.0), (0.0, 12000.5), (0.0, 13000.0), (-1.0, 100.0)]:
        with pytest.raises(ValueError, match="f_min < f_max"):
            mel_filterbank(f_min=f_min, f_max=f_max)


def test_num_frames_counts_the_centred_frame_of_an_empty_signal():
    assert [num_frames(n) for n in (0, 1, 255, 256, 257)] == [1, 1, 1, 2, 2]


def test_module_settings_and_input_rules():
    mel = MelSpectrogram()
    assert (mel.sample_rate, mel.n_fft, mel.win_length, mel.hop_length, mel.n_mels) == (24000, 1024, 1024, 256, 100)
    assert mel.state_dict() == {}  # window and filterbank are not saved
    for samples in (400, 512):  # reflect padding needs more than n_fft // 2 samples
        with pytest.raises(ValueError, match="need more than 512 samples"):
            mel(torch.zeros(samples))
    out = mel(torch.randn(2, 1000, dtype=torch.float64))
    assert out.dtype == torch.float32 and out.shape == (2, 100, 4)
