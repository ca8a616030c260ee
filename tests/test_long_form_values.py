"""mmflow.long_form's seams by value: with a stand-in for ``generate`` that fills window k with k + 1, the
cross-fade, the given context of the next window, the seeds, extras and padding are all known numbers.
(The mutation study, benchmarks/mutation.py, found the cross-fade arithmetic unguarded.)"""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch

from mmflow import long_form
from mmflow.long_form import WINDOW_SEED_STRIDE, LongFormSampler, StreamTrack, Timeline, batch_tracks
from mmflow.streams import StreamSpec

RATES = {"fast": 50, "slow": 5}  # common period 1/5 s: 10 fast frames, 1 slow frame


class Specs:
    """The little of a model LongFormSampler asks for."""

    stream_names = list(RATES)

    def stream_spec(self, name):
        return StreamSpec(name, RATES[name], 2)


@pytest.fixture
def calls(monkeypatch):
    """Replace generate: window k (k-th call, from 1) yields k + 1 on generated frames, given frames as given."""
    seen = []

    def fake_generate(model, batches, seeds=None, progress=False, **kwargs):
        seen.append({"batches": batches, "seeds": seeds})
        value = float(len(seen) + 1)  # 2, 3, ...: not 1, which would hide a division
        return {n: torch.where(b.given.unsqueeze(-1), b.latent, torch.full_like(b.latent, value))
                .masked_fill(~b.valid.unsqueeze(-1), 0.0).float() for n, b in batches.items()}

    monkeypatch.setattr(long_form, "generate", fake_generate)
    return seen


def _timeline(seconds, seed=0, given=(), extras=None):
    tracks = {}
    for name, rate in RATES.items():
        n = round(seconds * rate)
        flags = torch.zeros(n, dtype=torch.bool)
        for i in given if name == "fast" else ():
            flags[i] = True
        tracks[name] = StreamTrack(torch.full((n, 2), -5.0, dtype=torch.float64), flags,
                                   torch.arange(float(n))[:, None] if name == "slow" else None,
                                   frame_extras={"ids": torch.arange(n)} if name == "fast" else {},
                                   extras=(extras or {}) if name == "fast" else {})
    return Timeline(tracks, seed=seed)


def test_the_seam_is_a_linear_cross_fade_by_value(calls):
    sampler = LongFormSampler(Specs(), max_seconds=1.0, context_seconds=0.4, fade_seconds=0.2)
    timeline = _timeline(1.6, seed=7, given=[0, 1, 45])
    assert sampler.windows(timeline) == [(0, 1), (Fraction(3, 5), Fraction(8, 5))]
    out = sampler([timeline])[0]
    assert [c["seeds"] for c in calls] == [[7], [7 + WINDOW_SEED_STRIDE]]
    fast, slow = out["fast"], out["slow"]
    assert fast.dtype == torch.float64 and fast.shape == (80, 2) and slow.shape == (8, 2)
    w = torch.arange(1, 11, dtype=torch.float64) / 11  # 10 faded fast frames: 1/11 ... 10/11
    expected = torch.cat([torch.full((40,), 2.0), 2 + w, torch.full((30,), 3.0)]).double()
    expected[[0, 1, 45]] = -5.0  # given frames stay exactly as given, inside the fade too
    torch.testing.assert_close(fast[:, 0], expected, rtol=0, atol=1e-12)
    # the slow stream fades over one frame: weight 1/2
    torch.testing.assert_close(slow[:, 0], torch.tensor([2, 2, 2, 2, 2.5, 3, 3, 3], dtype=torch.float64),
                               rtol=0, atol=1e-12)


def test_the_next_window_is_given_the_previous_output_up_to_the_fade(calls):
    sampler = LongFormSampler(Specs(), max_seconds=1.0, context_seconds=0.4, fade_seconds=0.2)
    sampler([_timeline(1.6, given=[0, 1, 45])])
    first, second = calls[0]["batches"]["fast"], calls[1]["batches"]["fast"]
    assert first.given[0].nonzero().flatten().tolist() == [0, 1, 45]  # the first window: only what was given
    assert second.num_frames == 50
    assert second.given[0, :10].all() and (second.latent[0, :10] == 2.0).all()  # window 1's output, given
    assert second.given[0].nonzero().flatten().tolist() == [*range(10), 15]  # 15: frame 45 of the timeline
    assert torch.equal(second.extras["ids"][0], torch.arange(30, 80))
    slow = calls[1]["batches"]["slow"]
    assert slow.given[0].tolist() == [True, False, False, False, False]
    assert torch.equal(slow.cond[0, :, 0], torch.arange(3.0, 8.0))


def test_a_short_window_in_a_batch_with_a_long_one(calls):
    sampler = LongFormSampler(Specs(), max_seconds=1.0, context_seconds=0.4, fade_seconds=0.2)
    long, short = _timeline(2.2, seed=1), _timeline(1.2, seed=2)
    together = sampler([long, short])
    assert [c["seeds"] for c in calls] == [[1, 2], [1 + WINDOW_SEED_STRIDE, 2 + WINDOW_SEED_STRIDE],
                                           [1 + 2 * WINDOW_SEED_STRIDE]]
    assert together[1]["fast"].shape == (60, 2)
    w = torch.arange(1, 11, dtype=torch.float64) / 11
    expected = torch.cat([torch.full((40,), 2.0), 2 + w, torch.full((10,), 3.0)]).double()
    torch.testing.assert_close(together[1]["fast"][:, 0], expected, rtol=0, atol=1e-12)


def test_whole_sample_extras_keep_a_long_sample_in_one_window(calls):
    sampler = LongFormSampler(Specs(), max_seconds=1.0, context_seconds=0.4, fade_seconds=0.2)
    text = {"text": torch.arange(4)}
    long = _timeline(1.6, extras=text)
    assert sampler.windows(long) == [(Fraction(0), Fraction(8, 5))]
    assert sampler.windows(_timeline(0.8, extras=text)) == [(Fraction(0), Fraction(4, 5))]
    assert len(sampler.windows(_timeline(1.6))) == 2
    sampler([long])
    assert len(calls) == 1 and torch.equal(calls[0]["batches"]["fast"].extras["text"][0], torch.arange(4))


def test_window_settings_on_the_grid_and_their_bounds():
    sampler = LongFormSampler(Specs(), max_seconds=5.0)
    assert sampler.context == 2 and sampler.fade == Fraction(1, 5)  # defaults 2.0 s and 0.32 s, on the grid
    assert LongFormSampler(Specs(), max_seconds=1.0, context_seconds=0.4, fade_seconds=0.0).fade == 0
    assert LongFormSampler(Specs(), max_seconds=1.0, context_seconds=0.4, fade_seconds=0.4).fade == Fraction(2, 5)
    with pytest.raises(ValueError, match="fade_seconds <= context_seconds"):
        LongFormSampler(Specs(), max_seconds=1.0, context_seconds=0.4, fade_seconds=0.6)


def test_batch_tracks_pads_with_zeros_and_pad_id():
    short = StreamTrack(torch.ones(2, 2), torch.tensor([True, False]), torch.ones(2, 1),
                        frame_extras={"ids": torch.tensor([4, 5])}, extras={"text": torch.tensor([7])})
    long = StreamTrack(torch.ones(4, 2), torch.ones(4, dtype=torch.bool), torch.ones(4, 1),
                       frame_extras={"ids": torch.arange(4)}, extras={"text": torch.tensor([8])})
    batch = batch_tracks([short, long], pad_id=-3)
    assert batch.lengths.tolist() == [2, 4]
    assert (batch.latent[0, 2:] == 0).all() and (batch.cond[0, 2:] == 0).all()
    assert batch.given[0].tolist() == [True, False, False, False]
    assert batch.extras["ids"][0].tolist() == [4, 5, -3, -3] and batch.extras["text"].tolist() == [[7], [8]]
