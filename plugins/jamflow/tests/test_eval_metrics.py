"""The pure metrics of ``benchmarks/jamflow_eval.py``: text normalisation, WER, speech envelope, lagged correlation
and the targets, on tiny synthetic inputs (no ASR model, no pipeline)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "jamflow_eval.py"


@pytest.fixture(scope="module")
def ev():
    spec = importlib.util.spec_from_file_location("jamflow_eval", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_normalize_text_case_punctuation_digits(ev):
    assert ev.normalize_text("Could you pass the salt, please?") == "could you pass the salt please".split()
    assert ev.normalize_text("We meet at 7 — don't be late!") == "we meet at seven don't be late".split()
    assert ev.normalize_text("21 cats, 1,200 dogs and 3.5 cows") == (
        "twenty one cats one thousand two hundred dogs and three point five cows".split())
    assert ev.normalize_text("sand-castle 'quoted'") == ["sand", "castle", "quoted"]
    assert ev.normalize_text("  ... ") == []


def test_number_to_words(ev):
    assert ev.number_to_words(0) == "zero"
    assert ev.number_to_words(40) == "forty"
    assert ev.number_to_words(105) == "one hundred five"
    assert ev.number_to_words(2_000_019) == "two million nineteen"


def test_wer_identical_substitution_deletion_insertion(ev):
    ref = "The kettle is boiling, so let us make some tea."
    n = len(ev.normalize_text(ref))
    assert ev.wer(ref, ref) == 0.0
    assert ev.wer(ref, "the KETTLE is boiling so let us make some tea") == 0.0  # case and punctuation only
    assert ev.wer(ref, "The kettle is boiling, so let us make some coffee.") == pytest.approx(1 / n)
    assert ev.wer(ref, "The kettle is boiling, so let us make tea.") == pytest.approx(1 / n)
    assert ev.wer(ref, "The kettle is boiling, so let us make some hot tea.") == pytest.approx(1 / n)
    assert ev.wer(ref, "") == 1.0
    assert ev.wer("", "") == 0.0
    assert ev.word_errors("a b c", "x b c d") == (2, 3)


def test_edit_distance(ev):
    assert ev.edit_distance([], ["a"]) == 1
    assert ev.edit_distance(list("kitten"), list("sitting")) == 3


def test_rms_envelope_level_and_timing(ev):
    rate, fps = 1000, 25
    t = np.arange(2 * rate) / rate
    sine = 0.5 * np.sin(2 * np.pi * 100 * t)
    env = ev.rms_envelope(sine, rate, 50, fps)
    assert env.shape == (50,) and env.dtype == np.float32
    assert np.allclose(env[2:-2], 0.5 / math.sqrt(2), atol=1e-3)
    assert env[0] == pytest.approx(0.5 / math.sqrt(2) / math.sqrt(2), abs=0.02)  # half the window before 0
    burst = np.zeros(rate)
    burst[400:440] = 1.0  # 0.40-0.44 s: centred on motion frame 10.5 → frames 10 and 11 see half of it
    env = ev.rms_envelope(burst, rate, 30, fps)
    assert set(np.argsort(env)[-2:]) == {10, 11}
    assert np.all(env[25:] == 0)  # past the audio: silence


def test_lagged_correlation_finds_known_lag(ev):
    rng = np.random.default_rng(0)
    audio = np.convolve(rng.random(120), np.ones(4) / 4, mode="same")
    for shift in (-3, 0, 2):
        mouth = np.roll(audio, shift)  # mouth[t + shift] == audio[t]
        curve = ev.lagged_correlation(mouth, audio, max_lag=5)
        assert sorted(curve) == list(range(-5, 6))
        lag, r = ev.best_lag(curve)
        assert lag == shift and r > 0.99


def test_envelope_and_lag_end_to_end(ev):
    """Speech bursts where a synthetic mouth opens, the mouth one frame late: lag +1 is found."""
    rate, fps, frames = 8000, 25, 100
    rng = np.random.default_rng(1)
    opening = np.clip(np.convolve(rng.random(frames) > 0.6, np.ones(3) / 3, mode="same"), 0, 1)
    samples = np.arange(frames * rate // fps)
    gain = np.interp(samples / rate * fps, np.arange(frames), opening)
    wave = gain * np.sin(2 * np.pi * 220 * samples / rate)
    env = ev.rms_envelope(wave, rate, frames, fps)
    late_mouth = np.concatenate([[0.0], opening[:-1]])
    lag, r = ev.best_lag(ev.lagged_correlation(late_mouth, env))
    assert lag == 1 and r > 0.9


def test_constant_signals_are_nan_and_skipped(ev):
    assert math.isnan(ev.pearson(np.zeros(10), np.arange(10)))
    curve = ev.lagged_correlation(np.zeros(20), np.arange(20.0), max_lag=2)
    lag, r = ev.best_lag(curve)
    assert lag is None and math.isnan(r)
    mean = ev.mean_curve([{0: 0.5, 1: math.nan}, {0: 0.3, 1: math.nan}])
    assert mean[0] == pytest.approx(0.4) and math.isnan(mean[1])


def test_targets_pass_and_fail(ev):
    def summary(joint, no_joint, ceiling, r_joint, lag, r_no_joint):
        wer = {c: {"mean": v} for c, v in (("joint", joint), ("no_joint", no_joint), ("ceiling", ceiling))}
        sync = {"joint": {"best_r": r_joint, "best_lag": lag}, "no_joint": {"best_r": r_no_joint, "best_lag": 0}}
        return {"wer": wer, "sync": sync}

    good = ev.targets(summary(0.25, 0.27, 0.2, 0.6, 1, 0.1))
    assert all(t["passed"] for t in good), good
    bad = {t["target"]: t["passed"] for t in ev.targets(summary(0.5, 0.3, 0.35, 0.55, -2, None))}
    assert bad == {
        "WER(joint) <= WER(ceiling) + 0.10": False,
        "WER(ceiling) <= 0.30": False,
        "sync r(joint) >= 0.5": True,
        "|sync lag(joint)| <= 1 frame": False,
        "joint clearly better: sync r(joint) >= max(r(no_joint), 0) + 0.10": True,
        "joint clearly better: WER(joint) <= WER(no_joint) + 0.05": False,
    }
    undefined = ev.targets(summary(0.2, 0.2, 0.2, None, None, None))
    assert not undefined[2]["passed"] and not undefined[3]["passed"]
