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

It is off by default (``MMDiT.length_buckets = None``) because padding is not free: up to ``growth`` more
tokens, and a copy of q/k/v in and out. It pays where a new length is expensive (a compiled kernel, a
BlockMask); on CPU with dense masks, which cost milliseconds to build, it does not
(``benchmarks/mask_build.py``, ``benchmarks/results/mask-build-cpu*.json``).

Shape letters: ``b`` batch, ``h`` heads, ``N`` joint tokens, ``d`` head width.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
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
        ladders = {
            name: cls(min_seconds * float(rate), growth, max(1, round(multiple_seconds * float(rate))))
            for name, rate in rates.items()
        }
        first = next(iter(ladders.values()))
        return cls(first.min_length, growth, first.multiple, streams=ladders, joint=True)

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
