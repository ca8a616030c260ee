"""Length bucketing: attention runs on sequences padded up to a few bucket lengths.

A mask, a FlexAttention BlockMask or a compiled kernel is built for one sequence shape. A sampler that meets
many lengths (every text gives another) would build each anew; with bucketing each stream's part of the joint
sequence is padded at its end up to the next length of a geometric ladder (``LengthBuckets``), the padding is
masked as key padding, and whatever was built for a bucket serves every length in it. The bucketed mask tells
the BlockMask builder where padding may start (``AttentionMask.padding_from``: the bucket's smallest length),
so its block tables are built once per bucket; dense masks keep the policy's part per bucket
(``AttentionMask.structure``) and add only the padding.

Padding happens around the attention call only: queries and keys arrive with their rotary positions already
applied, so positions, time alignment and everything outside attention are untouched, and the real frames'
outputs equal the unpadded run's (to float rounding: the kernels sum over a longer, masked row).

It is a saved model setting: the MMDiT config argument ``length_buckets`` holds ``LengthBuckets.to_config()``
(``None``: off, the default), so what a model is saved with is what runs when it is loaded; training recipes
set it under ``model.length_buckets`` and ``mmflow generate --length-buckets`` overrides it for one run. The
short form ``"time_aligned"`` keeps no rates of its own: the ladders are derived from the model's streams.

It is off by default because padding is not free: up to ``growth`` more tokens, and a copy of q/k/v in and out.
It pays where a new length is expensive (a compiled kernel, a BlockMask); on CPU with dense masks, which cost
milliseconds to build, it does not (``benchmarks/mask_build.py``, ``benchmarks/results/mask-build-cpu*.json``).

Shape letters: ``b`` batch, ``h`` heads, ``N`` joint tokens, ``d`` head width.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache

import torch

from .masks import AttentionMask, StreamSegment, build_attention_mask


@dataclass(frozen=True)
class LengthBuckets:
    """A geometric ladder of bucket lengths: rung i is ``min_length · growthⁱ`` rounded up to a multiple of
    ``multiple``.

    Padding costs at most a factor ``growth`` in tokens (``growth²`` in attention work), plus the rounding; the
    number of buckets up to length n grows as log(n) / log(growth). ``streams`` gives some streams their own
    ladder (``{"motion": LengthBuckets(16, 1.25, 4)}``); the others use this one. With ``joint`` the streams of
    one joint sequence share a rung index (the highest any of them needs), so a clip's layout changes at one
    time for all streams; ``time_aligned`` builds such ladders.
    """

    min_length: float = 64
    growth: float = 1.25
    multiple: int = 16
    streams: Mapping[str, LengthBuckets] | None = None
    joint: bool = False
    # the time_aligned() arguments this ladder was derived with (saved as that short form), else None
    aligned: tuple[float, float, float] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        if not self.min_length > 0 or self.multiple < 1:
            raise ValueError(
                f"LengthBuckets needs min_length > 0 and multiple >= 1, got {self.min_length} and {self.multiple}"
            )
        if not self.growth > 1:
            raise ValueError(f"LengthBuckets needs growth > 1 (1.25 pads at most 25 %), got {self.growth}")
        if self.streams is not None:  # frozen and hashable: a sorted tuple of (stream, ladder)
            object.__setattr__(self, "streams", tuple(sorted(dict(self.streams).items())))

    @classmethod
    def time_aligned(
        cls, rates: Mapping[str, Fraction | float], min_seconds: float = 1.0, growth: float = 1.25,
        multiple_seconds: float = 0.16,
    ) -> LengthBuckets:
        """Joint ladders, one per stream, rung i at ``min_seconds · growthⁱ`` seconds rounded up to about
        ``multiple_seconds`` worth of frames (at least one frame)."""
        if not rates:
            raise ValueError("LengthBuckets.time_aligned needs the streams' frame rates, got none")
        if not (min_seconds > 0 and multiple_seconds > 0):
            raise ValueError(f"LengthBuckets.time_aligned needs min_seconds > 0 and multiple_seconds > 0, got "
                             f"{min_seconds} and {multiple_seconds}")
        ladders = {
            name: cls(min_seconds * float(rate), growth, max(1, round(multiple_seconds * float(rate))))
            for name, rate in rates.items()
        }
        first = next(iter(ladders.values()))
        return cls(first.min_length, growth, first.multiple, streams=ladders, joint=True,
                   aligned=(min_seconds, growth, multiple_seconds))

    # ------------------------------------------------------------------------------------ saved form

    def to_config(self, explicit: bool = False) -> dict | str:
        """The JSON form ``from_config`` reads back to an equal ladder: ``"time_aligned"`` (or its mapping when
        an argument is not the default) for a ladder made by ``time_aligned``, else the explicit mapping
        (always with ``explicit``)."""
        if self.aligned is not None and not explicit:
            given = dict(zip(ALIGNED_KEYS, self.aligned, strict=True))
            if given == ALIGNED_DEFAULTS:
                return TIME_ALIGNED
            return {TIME_ALIGNED: True, **{k: v for k, v in given.items() if v != ALIGNED_DEFAULTS[k]}}
        out = {"min_length": self.min_length, "growth": self.growth, "multiple": self.multiple, "joint": self.joint}
        if self.streams:
            out["streams"] = {name: {k: getattr(ladder, k) for k in LADDER_KEYS} for name, ladder in self.streams}
        return out

    @classmethod
    def from_config(
        cls, value, rates: Mapping[str, Fraction | float] | None = None, where: str = "length_buckets"
    ) -> LengthBuckets | None:
        """The ladder of a saved setting (``None`` or ``"off"``: no bucketing). ``rates`` are the model's
        streams (their frame rates): ``time_aligned`` derives its ladders from them and explicit per-stream
        ladders must name them. A bad value raises ``ValueError`` naming ``where`` and the field."""
        value = check_config(value, where)
        if value is None:
            return None
        if value == TIME_ALIGNED or TIME_ALIGNED in value:
            if rates is None:
                raise ValueError(f"{where}: 'time_aligned' derives its ladders from the model's stream rates; "
                                 "resolve it with the model's rates (MMDiT does this)")
            arguments = {**ALIGNED_DEFAULTS, **({} if value == TIME_ALIGNED else value)}
            arguments.pop(TIME_ALIGNED, None)
            return cls.time_aligned(rates, **arguments)
        streams = value.get("streams")
        if streams and rates is not None:
            unknown = sorted(set(streams) - set(rates))
            if unknown:
                raise ValueError(f"{where}.streams: unknown stream(s) {unknown}; this model's streams are "
                                 f"{sorted(rates)}")
        ladders = {name: cls(**ladder) for name, ladder in streams.items()} if streams else None
        return cls(**{k: v for k, v in value.items() if k != "streams"}, streams=ladders)

    # ------------------------------------------------------------------------------------ ladders

    def ladder(self, stream: str | None = None) -> LengthBuckets:
        """The ladder of ``stream`` (its own if it has one, else this one)."""
        return dict(self.streams or ()).get(stream, self) if stream is not None else self

    def rung(self, length: int, stream: str | None = None) -> int:
        """The index of the lowest rung that holds ``length`` frames."""
        ladder = self.ladder(stream)
        return _rung(ladder.min_length, ladder.growth, ladder.multiple, int(length))

    def rung_length(self, rung: int, stream: str | None = None) -> int:
        """Frames of rung ``rung`` (0 below the first)."""
        ladder = self.ladder(stream)
        return _rung_length(ladder.min_length, ladder.growth, ladder.multiple, rung) if rung >= 0 else 0

    def bucket(self, length: int, stream: str | None = None) -> int:
        """The smallest bucket length that holds ``length`` frames."""
        return self.rung_length(self.rung(length, stream), stream)

    def smallest(self, length: int, stream: str | None = None) -> int:
        """The smallest length that falls into the same bucket as ``length``."""
        below = self.rung_length(self.rung(length, stream) - 1, stream)
        return below + 1 if below else 0

    def layout(self, lengths: Mapping[str, int]) -> dict[str, tuple[int, int]]:
        """Per stream (bucket length, smallest length the bucket is built for). Joint ladders share the
        highest rung any stream needs and are built for lengths down to two rungs below it: a stream whose
        own rung is one lower (a frame of rounding at a rung) reuses the same bucket."""
        if not self.joint:
            return {name: (self.bucket(n, name), self.smallest(n, name)) for name, n in lengths.items()}
        top = max(self.rung(n, name) for name, n in lengths.items())
        return {name: (self.rung_length(top, name), self.rung_length(top - 2, name) + (top >= 2)) for name in lengths}


def model_setting(value, rates: Mapping[str, Fraction | float], where: str = "length_buckets"):
    """``(ladder or None, its saved form)`` for a model whose streams have ``rates``: ``value`` is a
    ``LengthBuckets``, its JSON form, ``"off"`` or ``None``. The saved form reads back to the same ladder on
    this model (a ``time_aligned`` ladder made from other rates is saved in full)."""
    if isinstance(value, LengthBuckets):
        saved = value.to_config()
        if LengthBuckets.from_config(saved, rates, where) != value:
            saved = value.to_config(explicit=True)
            LengthBuckets.from_config(saved, rates, where)  # its per-stream ladders must name this model's streams
        return value, saved
    buckets = LengthBuckets.from_config(value, rates, where)
    return buckets, None if buckets is None else buckets.to_config()


TIME_ALIGNED = "time_aligned"
ALIGNED_KEYS = ("min_seconds", "growth", "multiple_seconds")
ALIGNED_DEFAULTS = {"min_seconds": 1.0, "growth": 1.25, "multiple_seconds": 0.16}
LADDER_KEYS = ("min_length", "growth", "multiple")
OFF = "off"


def check_config(value, where: str = "length_buckets"):
    """``value`` checked as a saved ``length_buckets`` setting, without the model (a recipe checks its config
    before building anything): ``None`` (``"off"`` too) or the JSON form. Returns it (``None`` for off);
    a bad value raises ``ValueError`` naming ``where`` and the field, with what is allowed."""
    forms = ("null or 'off', 'time_aligned', {time_aligned: true, min_seconds, growth, multiple_seconds} or "
             "{min_length, growth, multiple, joint, streams: {STREAM: {min_length, growth, multiple}}}")
    if value is None or value == OFF:
        return None
    if value == TIME_ALIGNED:
        return value
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: expected {forms}, got {value!r}")
    if TIME_ALIGNED in value:
        _check_keys(value, (TIME_ALIGNED, *ALIGNED_KEYS), where)
        if value[TIME_ALIGNED] is not True:
            raise ValueError(f"{where}.{TIME_ALIGNED}: must be true (leave length_buckets out, or 'off', to switch "
                             f"bucketing off), got {value[TIME_ALIGNED]!r}")
        for key in ALIGNED_KEYS:
            if key in value:
                _check_number(value[key], f"{where}.{key}", 1 if key == "growth" else 0)
        return dict(value)
    _check_keys(value, (*LADDER_KEYS, "joint", "streams"), where)
    _check_ladder(value, where)
    if "joint" in value and not isinstance(value["joint"], bool):
        raise ValueError(f"{where}.joint: must be true or false, got {value['joint']!r}")
    streams = value.get("streams")
    if streams is not None:
        if not isinstance(streams, Mapping):
            raise ValueError(f"{where}.streams: expected a mapping of stream name to "
                             f"{{min_length, growth, multiple}}, got {streams!r}")
        for name, ladder in streams.items():
            if not isinstance(ladder, Mapping):
                raise ValueError(f"{where}.streams.{name}: expected {{min_length, growth, multiple}}, got {ladder!r}")
            _check_keys(ladder, LADDER_KEYS, f"{where}.streams.{name}")
            _check_ladder(ladder, f"{where}.streams.{name}")
    return {**value, "streams": {k: dict(v) for k, v in streams.items()}} if streams else dict(value)


def _check_keys(value: Mapping, allowed: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: {list(allowed)}")


def _check_number(value, where: str, above: float, integer: bool = False) -> None:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not value > above:
        raise ValueError(f"{where}: must be {'an integer' if integer else 'a number'} > {above}, got {value!r}")


def _check_ladder(value: Mapping, where: str) -> None:
    for key, above, integer in (("min_length", 0, False), ("growth", 1, False), ("multiple", 0, True)):
        if key in value:
            _check_number(value[key], f"{where}.{key}", above, integer)


def _rung_length(min_length: float, growth: float, multiple: int, rung: int) -> int:
    # each rung rounded on its own (not from the one before): ladders at other rates stay aligned in time
    return multiple * math.ceil(min_length * growth**rung / multiple)


@lru_cache(maxsize=4096)
def _rung(min_length: float, growth: float, multiple: int, length: int) -> int:
    if length < 0:
        raise ValueError(f"a sequence length must be >= 0, got {length}")
    rung = 0
    while _rung_length(min_length, growth, multiple, rung) < length:
        rung += 1
    return rung


@dataclass(frozen=True)
class BucketedMask:
    """A mask moved onto the bucket layout: ``mask`` is for the padded sequence; ``spans`` lists, per stream,
    its tokens ``(start, stop)`` in the unpadded sequence and the padding after them (empty: the lengths already
    are bucket lengths and nothing moves). Contiguous copies, not an index: index_copy along the token axis is
    many times slower on CPU."""

    mask: AttentionMask
    spans: tuple[tuple[int, int, int], ...]

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """``(b, h, N, d)`` -> ``(b, h, N_bucket, d)``, zeros in the padding."""
        if not self.spans:
            return x
        pieces = []
        for start, stop, padding in self.spans:
            pieces.append(x[:, :, start:stop])
            if padding:
                pieces.append(x.new_zeros(*x.shape[:2], padding, x.shape[3]))
        return torch.cat(pieces, dim=2)

    def unpad(self, x: torch.Tensor) -> torch.Tensor:
        """``(b, h, N_bucket, d)`` -> the real tokens ``(b, h, N, d)``."""
        if not self.spans:
            return x
        pieces, offset = [], 0
        for start, stop, padding in self.spans:
            pieces.append(x[:, :, offset : offset + stop - start])
            offset += stop - start + padding
        return torch.cat(pieces, dim=2)


def bucketed(mask: AttentionMask, buckets: LengthBuckets) -> BucketedMask:
    """``mask`` on the bucket lengths of ``buckets`` (built once per mask and ladder, then kept on the mask)."""
    key = ("bucketed", buckets)
    if key not in mask._plans:
        mask._plans[key] = _build_bucketed(mask, buckets)
    return mask._plans[key]


def _build_bucketed(mask: AttentionMask, buckets: LengthBuckets) -> BucketedMask:
    layout = buckets.layout({segment.name: segment.length for segment in mask.segments})
    segments, offset, spans, starts = [], 0, [], []
    for segment in mask.segments:
        length, smallest = layout[segment.name]
        segments.append(StreamSegment(segment.name, segment.rate, offset, length))
        spans.append((segment.offset, segment.offset + segment.length, length - segment.length))
        starts.append(smallest)
        offset += length
    moved = offset != mask.size
    device = next((t.device for t in (mask.key_valid, mask.joint_view) if t is not None), torch.device("cpu"))
    batch = next((t.shape[0] for t in (mask.key_valid, mask.joint_view) if t is not None), 1)
    # always a key_valid, even all real (a length on a rung): FlexAttention then traces one graph per bucket
    key_valid = torch.ones(batch, offset, dtype=torch.bool, device=device) if mask.key_valid is None else mask.key_valid
    if moved:
        key_valid = torch.zeros(batch, offset, dtype=torch.bool, device=device)
        for (start, stop, _), segment in zip(spans, segments, strict=True):
            real = True if mask.key_valid is None else mask.key_valid[:, start:stop]
            key_valid[:, segment.offset : segment.offset + stop - start] = real
    padded = build_attention_mask(mask.policy, segments, key_valid, mask.joint_view)
    padded.padding_from = tuple(starts)
    return BucketedMask(padded, tuple(spans) if moved else ())
