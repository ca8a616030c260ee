"""Attention mask policies over pairs of streams, compiled for one joint sequence.

A ``MaskPolicy`` says, for each (query stream, key stream) pair, which keys a query frame may see:

- ``Full``: every key of that stream;
- ``Blocked``: none of them;
- ``LocalWindow(seconds)``: keys whose start time is within ``seconds`` of the query's start time
  (a window of 2·seconds around it);
- ``SameTime``: the frames that overlap in time: a fast frame sees the slow frame that contains its start
  time, a slow frame sees the fast frames that start inside it.

Rules work on integer frame indices and exact rational rates only. Float time (``floor(t · 25)``) puts some
frames on the wrong side of a boundary, differently on CPU and GPU (``performance-anchors.md``).

A policy compiles (``build_attention_mask``) for a concrete joint sequence (streams concatenated in order,
each padded to its own length) into an ``AttentionMask``, which gives a dense boolean mask for SDPA and a
FlexAttention ``BlockMask``; both come from the same rule code. Key padding and per-sample joint-view
switches (a stream whose queries see only their own stream, used by guidance) are folded in.

Shape letters: ``b`` batch, ``N`` joint tokens, ``n`` tokens of one stream.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from functools import cached_property

import torch

from .streams import as_fraction

# --------------------------------------------------------------------------------------------------- rules


class MaskRule:
    """Which key frames of one stream a query frame of another (or the same) stream may see.

    ``allowed(q, k, q_rate, k_rate)`` takes broadcastable int64 frame-index tensors and exact rates and
    returns a bool tensor; it must use integer arithmetic only (it also runs inside FlexAttention).
    """

    kind: str = ""

    def allowed(self, q: torch.Tensor, k: torch.Tensor, q_rate: Fraction, k_rate: Fraction) -> torch.Tensor:
        raise NotImplementedError

    def to_config(self) -> dict:
        return {"rule": self.kind}

    def __eq__(self, other):
        return type(self) is type(other) and self.to_config() == other.to_config()

    def __hash__(self):
        return hash(tuple(sorted(self.to_config().items())))

    def __repr__(self):
        args = ", ".join(f"{k}={v}" for k, v in self.to_config().items() if k != "rule")
        return f"{type(self).__name__}({args})"


class Full(MaskRule):
    """Every key of the key stream."""

    kind = "all"

    def allowed(self, q, k, q_rate, k_rate):
        return torch.ones_like(q + k, dtype=torch.bool)


class Blocked(MaskRule):
    """No key of the key stream."""

    kind = "none"

    def allowed(self, q, k, q_rate, k_rate):
        return torch.zeros_like(q + k, dtype=torch.bool)


class LocalWindow(MaskRule):
    """Keys whose start time is within ``seconds`` of the query frame's start time."""

    kind = "window"

    def __init__(self, seconds: float | str | Fraction):
        self.seconds = as_fraction(seconds, "window")
        if self.seconds < 0:
            raise ValueError(f"a local window needs seconds >= 0, got {self.seconds}")

    def allowed(self, q, k, q_rate, k_rate):
        # |q / q_rate − k / k_rate| ≤ w, multiplied through by every denominator so it stays exact:
        # |q · a2·b1·w2 − k · b2·a1·w2| ≤ w1·a1·b1 with q_rate = a1/a2, k_rate = b1/b2, w = w1/w2.
        a1, a2 = q_rate.numerator, q_rate.denominator
        b1, b2 = k_rate.numerator, k_rate.denominator
        w1, w2 = self.seconds.numerator, self.seconds.denominator
        q_coef, k_coef, limit = a2 * b1 * w2, b2 * a1 * w2, w1 * a1 * b1
        common = math.gcd(math.gcd(q_coef, k_coef), limit) or 1
        return (q * (q_coef // common) - k * (k_coef // common)).abs() <= limit // common

    def to_config(self):
        return {"rule": self.kind, "seconds": f"{self.seconds.numerator}/{self.seconds.denominator}"}


class SameTime(MaskRule):
    """The frames of the key stream that overlap the query frame in time."""

    kind = "same_time"

    def allowed(self, q, k, q_rate, k_rate):
        if q_rate >= k_rate:  # fast query: the one slow key frame holding its start time
            ratio = k_rate / q_rate
            return k == (q * ratio.numerator) // ratio.denominator
        ratio = q_rate / k_rate  # slow query: the fast key frames starting inside it
        return q == (k * ratio.numerator) // ratio.denominator


RULES = {rule.kind: rule for rule in (Full, Blocked, LocalWindow, SameTime)}


def rule_from_config(config: Mapping | MaskRule | str) -> MaskRule:
    if isinstance(config, MaskRule):
        return config
    if isinstance(config, str):
        config = {"rule": config}
    config = dict(config)
    kind = config.pop("rule", None)
    if kind not in RULES:
        raise ValueError(f"unknown mask rule {kind!r}; choose one of {sorted(RULES)}")
    try:
        return RULES[kind](**config)
    except TypeError as error:
        raise ValueError(f"bad arguments {config} for mask rule {kind!r}: {error}") from error


# --------------------------------------------------------------------------------------------------- policy


@dataclass
class MaskPolicy:
    """Rules per (query stream, key stream); pairs not listed use ``default``."""

    rules: dict[tuple[str, str], MaskRule] = field(default_factory=dict)
    default: MaskRule = field(default_factory=Full)

    def rule(self, query: str, key: str) -> MaskRule:
        return self.rules.get((query, key), self.default)

    def validate(self, streams: Sequence[str]) -> None:
        """Raise if a rule names a stream the model does not have."""
        for query, key in self.rules:
            for name in (query, key):
                if name not in streams:
                    raise ValueError(
                        f"mask rule ({query!r} -> {key!r}) names stream {name!r}, which this model does not have; "
                        f"its streams are {list(streams)}"
                    )

    def to_config(self) -> dict:
        return {
            "default": self.default.to_config(),
            "rules": [{"query": q, "key": k, **rule.to_config()} for (q, k), rule in self.rules.items()],
        }

    @classmethod
    def from_config(cls, config: Mapping | MaskPolicy | None) -> MaskPolicy:
        if config is None:
            return cls()
        if isinstance(config, MaskPolicy):
            return config
        unknown = sorted(set(config) - {"default", "rules"})
        if unknown:
            raise ValueError(f"unknown mask policy keys {unknown}; a policy has 'default' and 'rules'")
        rules = {}
        for entry in config.get("rules", []):
            entry = dict(entry)
            try:
                pair = (entry.pop("query"), entry.pop("key"))
            except KeyError as error:
                raise ValueError(f"mask rule {entry} needs 'query' and 'key' stream names") from error
            rules[pair] = rule_from_config(entry)
        return cls(rules=rules, default=rule_from_config(config.get("default", "all")))


def local_global_policy(global_stream: str, local_stream: str, window_seconds: float | str) -> MaskPolicy:
    """The JAM-Flow masks (paper section 4.5), for any pair of streams.

    Queries of ``local_stream`` (motion in JAM-Flow) see their own stream and ``global_stream`` only inside a
    local window; queries of ``global_stream`` (audio) see all of their own stream and only the
    ``local_stream`` frame at their own time.
    """
    window = LocalWindow(window_seconds)
    return MaskPolicy(
        rules={
            (local_stream, local_stream): window,
            (local_stream, global_stream): window,
            (global_stream, global_stream): Full(),
            (global_stream, local_stream): SameTime(),
        }
    )


# ------------------------------------------------------------------------------------------------ cache


class MaskCache:
    """A bounded least-recently-used cache of built masks (dense tensors, BlockMasks, backend plans).

    Building a mask from its rules costs a pass over every (query, key) pair, a BlockMask much more; a sampler
    asks for the same one at every step. Entries are keyed by what the mask depends on (policy, stream
    lengths and rates, padding, joint views, device) and bounded by count and by the bytes of their tensors,
    so a long run over many lengths keeps memory flat. Cached tensors are shared: read them, never write.
    """

    def __init__(self, max_entries: int = 32, max_bytes: int = 256 * 2**20):
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._entries: OrderedDict[tuple, tuple[object, int]] = OrderedDict()
        self.hits = self.misses = 0

    def get(self, key: tuple, build: Callable[[], object]):
        if key in self._entries:
            self._entries.move_to_end(key)
            self.hits += 1
            return self._entries[key][0]
        self.misses += 1
        value = build()
        size = _nbytes(value)
        if size <= self.max_bytes:
            self._entries[key] = (value, size)
            while len(self._entries) > self.max_entries or self.nbytes > self.max_bytes:
                self._entries.popitem(last=False)
        return value

    @property
    def nbytes(self) -> int:
        return sum(size for _, size in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()
        self.hits = self.misses = 0


def _nbytes(value) -> int:
    """Bytes held by the tensors in ``value`` (a tensor, a tuple/list/dict of them, or an object's fields)."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (tuple, list)):
        return sum(_nbytes(item) for item in value)
    if isinstance(value, dict):
        return sum(_nbytes(item) for item in value.values())
    fields = getattr(value, "__dict__", None)
    return sum(_nbytes(item) for item in fields.values()) if fields else 0


MASK_CACHE = MaskCache()
"""Built masks shared by every ``AttentionMask`` with the same key (see ``AttentionMask.cache_key``)."""


def _tensor_key(tensor: torch.Tensor | None):
    """Content of a small bool tensor as a hashable key (one device-to-host copy)."""
    if tensor is None:
        return None
    flat = tensor.detach().to("cpu", torch.bool)
    return tuple(flat.shape), flat.numpy().tobytes()


# --------------------------------------------------------------------------------------------- compiled


@dataclass(frozen=True)
class StreamSegment:
    """Where one stream sits in the joint sequence."""

    name: str
    rate: Fraction
    offset: int
    length: int


@dataclass
class AttentionMask:
    """A mask policy compiled for one joint sequence; gives a dense bool mask or a FlexAttention BlockMask.

    ``key_valid`` ``(b, N)`` marks real (non-padding) tokens; ``joint_view`` ``(b, S)`` says per sample whether
    each stream's queries see the other streams. Padding queries see every real key (their output is discarded
    by the model), so no row is empty.
    """

    policy: MaskPolicy
    segments: tuple[StreamSegment, ...]
    key_valid: torch.Tensor | None = None
    joint_view: torch.Tensor | None = None
    _dense: torch.Tensor | None = field(default=None, repr=False)
    _block: object | None = field(default=None, repr=False)
    _key: tuple | None = field(default=None, repr=False)
    _plans: dict = field(default_factory=dict, repr=False)  # what backends derive from this mask (split plans)

    @property
    def size(self) -> int:
        return sum(segment.length for segment in self.segments)

    @cached_property
    def is_full(self) -> bool:
        """True when every query sees every key: no mask needs to be applied at all (computed once: on a GPU
        each check is a device sync, and every layer asks)."""
        if self.key_valid is not None and not bool(self.key_valid.all()):
            return False
        if self.joint_view is not None and len(self.segments) > 1 and not bool(self.joint_view.all()):
            return False
        return all(
            isinstance(self.policy.rule(a.name, b.name), Full) for a in self.segments for b in self.segments
        )

    @cached_property
    def per_sample(self) -> bool:
        """Whether the mask differs between samples (padding or per-sample joint views)."""
        padded = self.key_valid is not None and not bool(self.key_valid.all())
        switched = self.joint_view is not None and not bool(self.joint_view.all())
        return padded or switched

    def cache_key(self, what: str, device: torch.device | str | None = None, *extra) -> tuple:
        """Key of a mask built from this one in ``MASK_CACHE``: ``what`` was built, on which device, from which
        policy, layout, padding and joint views (only what changes the mask: no padding is ``None``)."""
        if self._key is None:
            policy = json.dumps(self.policy.to_config(), sort_keys=True)
            key_valid = self.key_valid if self.per_sample else None
            joint_view = self.joint_view if self.per_sample and len(self.segments) > 1 else None
            self._key = (policy, self.segments, _tensor_key(key_valid), _tensor_key(joint_view))
        return (what, None if device is None else str(torch.device(device)), *extra, *self._key)

    def _pair_allowed(self, qa: StreamSegment, kb: StreamSegment, q: torch.Tensor, k: torch.Tensor):
        return self.policy.rule(qa.name, kb.name).allowed(q, k, qa.rate, kb.rate)

    def dense(self, device: torch.device | str | None = None) -> torch.Tensor:
        """Boolean mask ``(b or 1, 1, N, N)``, True where a query may attend to a key (SDPA's convention).

        Built once per (policy, lengths, padding, joint views, device) and kept in ``MASK_CACHE``."""
        if self._dense is not None:
            return self._dense
        device = device or (self.key_valid.device if self.key_valid is not None else "cpu")
        self._dense = MASK_CACHE.get(self.cache_key("dense", device), lambda: self._build_dense(device))
        return self._dense

    def _build_dense(self, device: torch.device | str) -> torch.Tensor:
        n = self.size
        base = torch.zeros(n, n, dtype=torch.bool, device=device)
        for qa in self.segments:
            q = torch.arange(qa.length, device=device)[:, None]
            for kb in self.segments:
                k = torch.arange(kb.length, device=device)[None, :]
                block = self._pair_allowed(qa, kb, q, k)
                base[qa.offset : qa.offset + qa.length, kb.offset : kb.offset + kb.length] = block
        mask = base[None]  # (1, N, N)
        if self.per_sample:
            mask = mask.expand(self._batch_size(), n, n).clone()
            if self.joint_view is not None:
                for s, seg in enumerate(self.segments):
                    rows = slice(seg.offset, seg.offset + seg.length)
                    own = torch.zeros(n, dtype=torch.bool, device=device)
                    own[rows] = True
                    off = ~self.joint_view[:, s].to(device)  # (b,)
                    mask[off, rows, :] &= own
            if self.key_valid is not None:
                valid = self.key_valid.to(device)
                mask &= valid[:, None, :]
                mask |= (~valid)[:, :, None] & valid[:, None, :]  # padding queries: all real keys
        return mask.unsqueeze(1)

    def _batch_size(self) -> int:
        for tensor in (self.key_valid, self.joint_view):
            if tensor is not None:
                return tensor.shape[0]
        return 1

    def mask_mod(self):
        """A FlexAttention ``mask_mod(b, h, q_idx, kv_idx)`` with the same semantics as ``dense``."""
        segments = self.segments
        key_valid = self.key_valid if self.per_sample and self.key_valid is not None else None
        joint_view = self.joint_view if self.per_sample and self.joint_view is not None else None
        pair_allowed = self._pair_allowed

        def mask_mod(b, h, q_idx, kv_idx):
            allowed = torch.zeros_like(q_idx, dtype=torch.bool)
            for s, qa in enumerate(segments):
                in_q = (q_idx >= qa.offset) & (q_idx < qa.offset + qa.length)
                for kb in segments:
                    in_k = (kv_idx >= kb.offset) & (kv_idx < kb.offset + kb.length)
                    ok = in_q & in_k & pair_allowed(qa, kb, q_idx - qa.offset, kv_idx - kb.offset)
                    if joint_view is not None and kb is not qa:
                        ok = ok & joint_view[b, s]
                    allowed = allowed | ok
            if key_valid is not None:
                k_ok = key_valid[b, kv_idx]
                allowed = (allowed & k_ok) | (~key_valid[b, q_idx] & k_ok)
            return allowed

        return mask_mod

    def block_mask(self, device: torch.device | str, block_size: int = 128, compile: bool | None = None):
        """FlexAttention ``BlockMask`` for this mask, built once per (policy, lengths, padding, joint views,
        device, block size) and kept in ``MASK_CACHE``."""
        if self._block is None:
            from torch.nn.attention.flex_attention import create_block_mask

            batch = self._batch_size() if self.per_sample else None
            if compile is None:
                compile = torch.device(device).type == "cuda"
            self._block = MASK_CACHE.get(
                self.cache_key("block", device, block_size, compile),
                lambda: create_block_mask(
                    self.mask_mod(), batch, None, self.size, self.size, device=device,
                    BLOCK_SIZE=block_size, _compile=compile,
                ),
            )
        return self._block


def build_attention_mask(
    policy: MaskPolicy,
    segments: Sequence[StreamSegment],
    key_valid: torch.Tensor | None = None,
    joint_view: torch.Tensor | None = None,
) -> AttentionMask:
    """Compile ``policy`` for streams laid out as ``segments`` (in order, back to back)."""
    offset = 0
    for segment in segments:
        if segment.offset != offset:
            raise ValueError(f"segments must be back to back; {segment.name!r} starts at {segment.offset}, not {offset}")
        offset += segment.length
    if key_valid is not None and key_valid.shape[-1] != offset:
        raise ValueError(f"key_valid covers {key_valid.shape[-1]} tokens, the joint sequence has {offset}")
    if joint_view is not None and joint_view.shape[-1] != len(segments):
        raise ValueError(f"joint_view needs one column per stream ({len(segments)}), got {joint_view.shape[-1]}")
    return AttentionMask(policy=policy, segments=tuple(segments), key_valid=key_valid, joint_view=joint_view)
