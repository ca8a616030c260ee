"""Generation longer than a model's training length: overlapping windows with given context and cross-fades.

A ``Timeline`` is one sample's full request: per stream, the known values, which frames are given, per-frame
conditions and extras. When it is longer than ``max_seconds`` it is cut into windows. Window k > 0 starts
``context_seconds`` before the end of window k − 1; the first part of that overlap is given (taken from what
window k − 1 produced, so the model continues it), the last ``fade_seconds`` are generated again and
cross-faded with window k − 1's version. Window borders lie on the streams' common frame grid (``common_period``:
0.16 s for 93.75 Hz and 25 Hz), so every stream is cut at the same instant and stays aligned.

Windows of all timelines with the same index are sampled together in one padded batch (with per-sample seeds, so
a timeline's result does not depend on the batch it is in when the model masks padding).
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

import torch

from .flow import generate, sample_noise
from .streams import StreamBatch, StreamSpec

logger = logging.getLogger(__name__)

WINDOW_SEED_STRIDE = 1_000_003
"""Window k of a timeline with seed s draws its noise from seed s + k · stride."""


def common_period(specs: Mapping[str, StreamSpec]) -> Fraction:
    """The shortest time that is a whole number of frames in every stream (e.g. 4/25 s for 375/4 Hz and 25 Hz)."""
    periods = [1 / spec.frame_rate for spec in specs.values()]
    numerator = math.lcm(*(p.numerator for p in periods))
    denominator = math.gcd(*(p.denominator for p in periods))
    return Fraction(numerator, denominator)


@dataclass
class StreamTrack:
    """One stream of a timeline, time-major, without batch.

    latent: ``(n, c)`` known values (anything where not given). given: ``(n,)`` bool. cond: ``(n, k)`` per-frame
    condition or None. frame_extras: per-frame extras ``(n, ...)`` that are cut with the windows (e.g. aligned
    phoneme ids). extras: whole-sample extras (e.g. filler-padded token ids), which cannot be cut: a timeline
    carrying them must fit one window.
    """

    latent: torch.Tensor
    given: torch.Tensor
    cond: torch.Tensor | None = None
    frame_extras: dict[str, torch.Tensor] = field(default_factory=dict)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self):
        n = self.latent.shape[0]
        if self.given.shape != (n,):
            raise ValueError(f"given must be ({n},) like the latent's frames, got {tuple(self.given.shape)}")
        for key, value in self.frame_extras.items():
            if value.shape[0] != n:
                raise ValueError(f"frame_extras[{key!r}] has {value.shape[0]} frames, the latent {n}")

    @property
    def num_frames(self) -> int:
        return self.latent.shape[0]


@dataclass
class Timeline:
    """One sample to generate: a track per stream and the seed of its noise.

    ``noise`` (optional, per stream ``(n, c)`` like the track) is the starting noise of the whole timeline instead of
    the seed's: each window starts from its frames of it. Streams it leaves out get the seed's noise.
    """

    tracks: dict[str, StreamTrack]
    seed: int = 0
    noise: dict[str, torch.Tensor] | None = None

    def __post_init__(self):
        for name, value in (self.noise or {}).items():
            track = self.tracks.get(name)
            if track is None or tuple(value.shape) != tuple(track.latent.shape):
                expected = "no such stream" if track is None else f"{tuple(track.latent.shape)} (frames, channels)"
                raise ValueError(f"noise[{name!r}] has shape {tuple(value.shape)}; expected {expected}")


def _window_bounds(seconds: Fraction, max_seconds: Fraction, context: Fraction) -> list[tuple[Fraction, Fraction]]:
    """``(start, end)`` of each window; consecutive windows overlap by ``context``."""
    bounds, start = [], Fraction(0)
    while True:
        end = min(start + max_seconds, seconds)
        bounds.append((start, end))
        if end >= seconds:
            return bounds
        start = end - context


def _pad_stack(rows: Sequence[torch.Tensor], value) -> torch.Tensor:
    n = max(row.shape[0] for row in rows)
    out = rows[0].new_full((len(rows), n, *rows[0].shape[1:]), value)
    for i, row in enumerate(rows):
        out[i, : row.shape[0]] = row
    return out


def batch_tracks(tracks: Sequence[StreamTrack], pad_id: int = -1) -> StreamBatch:
    """Pad tracks of one stream into a ``StreamBatch`` (extras padded with ``pad_id``)."""
    lengths = [t.num_frames for t in tracks]
    latent = _pad_stack([t.latent for t in tracks], 0.0)
    given = _pad_stack([t.given for t in tracks], False)
    cond = None if tracks[0].cond is None else _pad_stack([t.cond for t in tracks], 0.0)
    extras = {}
    for key in {**tracks[0].frame_extras, **tracks[0].extras}:
        rows = [t.frame_extras[key] if key in t.frame_extras else t.extras[key] for t in tracks]
        extras[key] = _pad_stack(rows, pad_id)
    return StreamBatch.from_lengths(latent, lengths, given=given, cond=cond, extras=extras)


class LongFormSampler:
    """Sample timelines of any length with a model trained on clips of up to ``max_seconds``.

    Args:
        model: An ``MMDiT`` (or anything with ``specs`` and the ``generate`` interface).
        max_seconds: Longest window (rounded down to the common frame grid).
        context_seconds: Overlap of consecutive windows (rounded to the grid); the model sees it as given.
        fade_seconds: The end of the overlap that is generated again and cross-faded (rounded to the grid).
        pad_id: Padding value of extras (token ids).
    """

    def __init__(
        self, model, max_seconds: float, context_seconds: float = 2.0, fade_seconds: float = 0.32, pad_id: int = -1
    ):
        self.model, self.pad_id = model, pad_id
        self.specs = {name: model.stream_spec(name) for name in model.stream_names}
        self.period = common_period(self.specs)
        grid = lambda seconds: Fraction(seconds).limit_denominator(10_000) // self.period * self.period  # noqa: E731
        self.max_seconds, self.context, self.fade = grid(max_seconds), grid(context_seconds), grid(fade_seconds)
        if self.max_seconds <= 0:
            raise ValueError(f"max_seconds ({max_seconds}) is shorter than the common frame period {self.period} s")
        if not 0 <= self.fade <= self.context < self.max_seconds:
            raise ValueError(
                f"need 0 <= fade_seconds <= context_seconds < max_seconds on the {float(self.period)} s grid, got "
                f"fade {float(self.fade)}, context {float(self.context)}, max {float(self.max_seconds)}"
            )

    def seconds(self, timeline: Timeline) -> Fraction:
        """Duration of a timeline (its longest stream)."""
        return max(Fraction(t.num_frames) / self.specs[name].frame_rate for name, t in timeline.tracks.items())

    def windows(self, timeline: Timeline) -> list[tuple[Fraction, Fraction]]:
        """The windows of a timeline; one when it fits, or when whole-sample extras forbid cutting it."""
        seconds = self.seconds(timeline)
        bounds = _window_bounds(seconds, self.max_seconds, self.context)
        fixed = sorted(name for name, track in timeline.tracks.items() if track.extras)
        if len(bounds) > 1 and fixed:
            logger.warning(
                "a %.1f s sample is longer than one window (%.1f s), but stream(s) %s carry whole-sample conditions "
                "(e.g. filler-padded text) that cannot be cut; sampling it in one window",
                float(seconds), float(self.max_seconds), fixed,
            )
            return [(Fraction(0), seconds)]
        return bounds

    def _frames(self, name: str, seconds: Fraction, track: StreamTrack) -> int:
        return min(self.specs[name].num_frames(seconds), track.num_frames)

    def _window_track(self, name, track, result, start, end, first: bool) -> StreamTrack:
        """The piece of ``track`` in ``[start, end)``; the overlap with the previous window is given from ``result``
        except its last ``fade`` seconds."""
        a, b = self._frames(name, start, track), self._frames(name, end, track)
        latent, given = track.latent[a:b].clone(), track.given[a:b].clone()
        if not first:
            keep = self._frames(name, start + self.context - self.fade, track) - a
            latent[:keep] = torch.where(given[:keep, None], latent[:keep], result[a : a + keep])
            given[:keep] = True
        return StreamTrack(
            latent,
            given,
            None if track.cond is None else track.cond[a:b],
            {k: v[a:b] for k, v in track.frame_extras.items()},
            dict(track.extras),
        )

    def _merge(self, name, track, result, window_out, start, end, first: bool) -> None:
        """Write a window's output into ``result``: cross-fade the regenerated overlap, copy the rest."""
        a, b = self._frames(name, start, track), self._frames(name, end, track)
        out = window_out[: b - a].to(result.dtype)
        if first:
            result[a : a + out.shape[0]] = out
            return
        fade_from = self._frames(name, start + self.context - self.fade, track) - a
        fade_to = self._frames(name, start + self.context, track) - a
        n = fade_to - fade_from
        if n > 0:
            w = torch.linspace(0, 1, n + 2, dtype=out.dtype, device=out.device)[1:-1, None]
            old = result[a + fade_from : a + fade_to]
            mixed = (1 - w) * old + w * out[fade_from:fade_to]
            # given frames stay exactly as given
            keep = track.given[a + fade_from : a + fade_to, None]
            result[a + fade_from : a + fade_to] = torch.where(keep, out[fade_from:fade_to], mixed)
        result[a + fade_to : a + out.shape[0]] = out[fade_to:]

    def _noise(self, timelines, members, batches, seeds, bounds) -> dict[str, torch.Tensor] | None:
        """A window's starting noise: the seeds' (``sample_noise``), with the frames of timelines that carry their
        own ``noise`` taken from it; None when none does (``generate`` then draws the seeds' noise itself)."""
        if all(timelines[i].noise is None for i in members):
            return None
        noise = sample_noise(batches, seeds=seeds)
        for row, i in enumerate(members):
            for name, given in (timelines[i].noise or {}).items():
                track = timelines[i].tracks[name]
                a, b = (self._frames(name, seconds, track) for seconds in bounds[i])
                noise[name][row, : b - a] = given[a:b].to(noise[name])
        return noise

    @torch.no_grad()
    def __call__(self, timelines: Sequence[Timeline], progress: bool = False, step_callback=None,
                 **generate_kwargs) -> list[dict]:
        """Generate every timeline; returns per timeline ``{stream: (n, c) tensor}``, given frames exact.

        ``step_callback(window, step, t, latents)``, when given, runs after every solver step of every window and
        returns the latents (``{stream: (rows, frames, channels)}``, one row per timeline in that window) the next
        step starts from. ``generate_kwargs`` go to :func:`mmflow.flow.generate` (guidance, scheduler, joint_view...).
        """
        if not timelines:
            raise ValueError("no timelines to generate")
        names = list(self.specs)
        for i, timeline in enumerate(timelines):
            missing = sorted(set(names) - set(timeline.tracks))
            if missing:
                raise ValueError(f"timeline {i} lacks stream(s) {missing}; the model has {names}")
        plans = [self.windows(t) for t in timelines]
        results = [{n: t.tracks[n].latent.clone() for n in names} for t in timelines]
        total = max(len(p) for p in plans)
        if total > 1:
            logger.info("long input: %d windows of up to %.1f s", total, float(self.max_seconds))
        for k in range(total):
            members = [i for i, plan in enumerate(plans) if k < len(plan)]
            batches = {}
            for name in names:
                tracks = [
                    self._window_track(name, timelines[i].tracks[name], results[i][name], *plans[i][k], first=k == 0)
                    for i in members
                ]
                batches[name] = batch_tracks(tracks, self.pad_id)
            seeds = [timelines[i].seed + k * WINDOW_SEED_STRIDE for i in members]
            noise = self._noise(timelines, members, batches, seeds, {i: plans[i][k] for i in members})
            callback = None if step_callback is None else functools.partial(step_callback, k)
            out = generate(self.model, batches, seeds=seeds, noise=noise, progress=progress, callback=callback,
                           **generate_kwargs)
            for row, i in enumerate(members):
                for name in names:
                    track = timelines[i].tracks[name]
                    self._merge(name, track, results[i][name], out[name][row], *plans[i][k], first=k == 0)
        return results
