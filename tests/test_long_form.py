"""Long inputs: windows on the common frame grid, given context from the previous window, cross-faded seams."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch

from mmflow.long_form import LongFormSampler, StreamTrack, Timeline, common_period
from mmflow.streams import StreamSpec
from mmflow.testing import tiny_model


def test_common_period_is_whole_frames_in_every_stream():
    specs = {"mel": StreamSpec("mel", Fraction(375, 4), 100), "motion": StreamSpec("motion", 25, 12)}
    assert common_period(specs) == Fraction(4, 25)
    assert common_period({"a": StreamSpec("a", 50, 1), "b": StreamSpec("b", 15, 1)}) == Fraction(1, 5)


def _timeline(seconds: float, seed: int = 0, given_until: float = 0.0) -> Timeline:
    g = torch.Generator().manual_seed(seed)
    tracks = {}
    for name, rate, channels in (("fast", 50, 3), ("slow", 15, 2)):
        n = round(seconds * rate)
        given = torch.arange(n) < round(given_until * rate)
        cond = torch.randn(n, 1, generator=g) if name == "slow" else None
        tracks[name] = StreamTrack(torch.randn(n, channels, generator=g), given, cond,
                                   frame_extras={"ids": torch.arange(n)} if name == "fast" else {})
    return Timeline(tracks, seed=seed)


@pytest.fixture(scope="module")
def model():
    return tiny_model(schedule="half")


def test_short_timelines_are_one_window_and_keep_given_frames(model):
    sampler = LongFormSampler(model, max_seconds=2.0, context_seconds=0.6, fade_seconds=0.2)
    timeline = _timeline(1.4, given_until=0.4)
    assert len(sampler.windows(timeline)) == 1
    out = sampler([timeline], steps=2)[0]
    given = timeline.tracks["fast"].given
    assert torch.equal(out["fast"][given], timeline.tracks["fast"].latent[given])
    assert out["slow"].shape == timeline.tracks["slow"].latent.shape


def test_long_timelines_are_windowed_on_the_grid_and_stay_aligned(model):
    sampler = LongFormSampler(model, max_seconds=1.0, context_seconds=0.4, fade_seconds=0.2)
    timeline = _timeline(3.0, given_until=0.2)
    bounds = sampler.windows(timeline)
    assert len(bounds) == 5 and bounds[0] == (0, 1) and bounds[1][0] == Fraction(3, 5)
    assert all((start / sampler.period).denominator == 1 for start, _ in bounds)  # every cut on the grid
    out = sampler([timeline], steps=2)[0]
    assert out["fast"].shape == (150, 3) and out["slow"].shape == (45, 2)
    assert torch.isfinite(out["fast"]).all()
    given = timeline.tracks["fast"].given
    assert torch.equal(out["fast"][given], timeline.tracks["fast"].latent[given])


def test_windows_in_a_batch_equal_windows_alone(model):
    sampler = LongFormSampler(model, max_seconds=1.0, context_seconds=0.4, fade_seconds=0.2)
    long, short = _timeline(2.2, seed=1), _timeline(0.8, seed=2)
    together = sampler([long, short], steps=2)
    for i, timeline in enumerate([long, short]):
        alone = sampler([timeline], steps=2)[0]
        for name in ("fast", "slow"):
            torch.testing.assert_close(together[i][name], alone[name], rtol=1e-4, atol=1e-5)


def test_the_second_window_continues_the_first(model):
    """The given part of window 2's overlap is exactly what window 1 produced (the model sees it as context)."""
    sampler = LongFormSampler(model, max_seconds=1.0, context_seconds=0.4, fade_seconds=0.2)
    timeline = _timeline(1.6)
    first_only = sampler([Timeline({n: StreamTrack(t.latent[: round(1.0 * r)], t.given[: round(1.0 * r)],
                                                   None if t.cond is None else t.cond[: round(1.0 * r)],
                                                   {k: v[: round(1.0 * r)] for k, v in t.frame_extras.items()})
                                    for (n, t), r in zip(timeline.tracks.items(), (50, 15), strict=True)},
                                   seed=timeline.seed)], steps=2)[0]
    full = sampler([timeline], steps=2)[0]
    # up to the start of the cross-fade (0.8 s) the result is window 1's
    torch.testing.assert_close(full["fast"][:40], first_only["fast"][:40])
    assert not torch.allclose(full["fast"][40:50], first_only["fast"][40:50])


def test_bad_window_settings_are_refused(model):
    with pytest.raises(ValueError, match="fade_seconds <= context_seconds < max_seconds"):
        LongFormSampler(model, max_seconds=1.0, context_seconds=1.0)
    with pytest.raises(ValueError, match="shorter than the common frame period"):
        LongFormSampler(model, max_seconds=0.1)
