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

import hashlib
import json
import logging
import math
import os
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from functools import cached_property
from pathlib import Path

import torch
from safetensors.torch import save_file

from .io import atomic_path
from .streams import as_fraction

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------- rules


class MaskRule:
    """Which key frames of one stream a query frame of another (or the same) stream may see.

    ``allowed(q, k, q_rate, k_rate)`` takes broadcastable int64 frame-index tensors and exact rates and
    returns a bool tensor; it must use integer arithmetic only (it also runs inside FlexAttention).
    """

    kind: str = ""

    def allowed(self, q: torch.Tensor, k: torch.Tensor, q_rate: Fraction, k_rate: Fraction) -> torch.Tensor:
        return self.bind(q_rate, k_rate)(q, k)

    def bind(self, q_rate: Fraction, k_rate: Fraction) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """``allowed`` for fixed rates, its rational arithmetic done here: the returned function does tensor
        integer ops only, so FlexAttention's tracer (which turns changing ints into symbols) can run it."""
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

    def bind(self, q_rate, k_rate):
        return lambda q, k: torch.ones_like(q + k, dtype=torch.bool)


class Blocked(MaskRule):
    """No key of the key stream."""

    kind = "none"

    def bind(self, q_rate, k_rate):
        return lambda q, k: torch.zeros_like(q + k, dtype=torch.bool)


class LocalWindow(MaskRule):
    """Keys whose start time is within ``seconds`` of the query frame's start time."""

    kind = "window"

    def __init__(self, seconds: float | str | Fraction):
        self.seconds = as_fraction(seconds, "window")
        if self.seconds < 0:
            raise ValueError(f"a local window needs seconds >= 0, got {self.seconds}")

    def bind(self, q_rate, k_rate):
        # |q / q_rate − k / k_rate| ≤ w, multiplied through by every denominator so it stays exact:
        # |q · a2·b1·w2 − k · b2·a1·w2| ≤ w1·a1·b1 with q_rate = a1/a2, k_rate = b1/b2, w = w1/w2.
        a1, a2 = q_rate.numerator, q_rate.denominator
        b1, b2 = k_rate.numerator, k_rate.denominator
        w1, w2 = self.seconds.numerator, self.seconds.denominator
        q_coef, k_coef, limit = a2 * b1 * w2, b2 * a1 * w2, w1 * a1 * b1
        common = math.gcd(math.gcd(q_coef, k_coef), limit) or 1
        q_coef, k_coef, limit = q_coef // common, k_coef // common, limit // common
        return lambda q, k: (q * q_coef - k * k_coef).abs() <= limit

    def to_config(self):
        return {"rule": self.kind, "seconds": f"{self.seconds.numerator}/{self.seconds.denominator}"}


class SameTime(MaskRule):
    """The frames of the key stream that overlap the query frame in time."""

    kind = "same_time"

    def bind(self, q_rate, k_rate):
        if q_rate >= k_rate:  # fast query: the one slow key frame holding its start time
            num, den = (k_rate / q_rate).numerator, (k_rate / q_rate).denominator
            return lambda q, k: k == (q * num) // den
        num, den = (q_rate / k_rate).numerator, (q_rate / k_rate).denominator  # slow query: the fast key frames
        return lambda q, k: q == (k * num) // den  # starting inside it


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
        self.builds: Counter[str] = Counter()  # misses per kind of entry (a key's first item), for benchmarks

    def get(self, key: tuple, build: Callable[[], object]):
        if key in self._entries:
            self._entries.move_to_end(key)
            self.hits += 1
            return self._entries[key][0]
        self.misses += 1
        self.builds[key[0]] += 1
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
        self.builds.clear()


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

    The policy's own mask for the layout and joint views (the *structure*) is cached apart from the padding, so
    masks that differ only in padding build it once. ``padding_from`` (one index per stream, set by length
    bucketing, ``mmflow.buckets``) promises that padding starts at or after it in every sample: the BlockMask's
    block tables are then built once for every padding in that range and only the padding itself changes.
    """

    policy: MaskPolicy
    segments: tuple[StreamSegment, ...]
    key_valid: torch.Tensor | None = None
    joint_view: torch.Tensor | None = None
    padding_from: tuple[int, ...] | None = None
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
        if self.padded or self.switched:
            return False
        return all(
            isinstance(self.policy.rule(a.name, b.name), Full) for a in self.segments for b in self.segments
        )

    @cached_property
    def padded(self) -> bool:
        """Whether some key is padding."""
        return self.key_valid is not None and not bool(self.key_valid.all())

    @cached_property
    def switched(self) -> bool:
        """Whether some sample's stream ignores the other streams (a per-sample joint-view switch is off)."""
        return self.joint_view is not None and len(self.segments) > 1 and not bool(self.joint_view.all())

    @cached_property
    def per_sample(self) -> bool:
        """Whether the mask differs between samples (padding or per-sample joint views)."""
        return self.padded or (self.joint_view is not None and not bool(self.joint_view.all()))

    def _keys(self) -> tuple:
        """(structure, padding): hashable keys of what the mask depends on (no padding or switch is ``None``)."""
        if self._key is None:
            policy = json.dumps(self.policy.to_config(), sort_keys=True)
            structure = (policy, self.segments, _tensor_key(self.joint_view if self.switched else None))
            self._key = (structure, _tensor_key(self.key_valid if self.padded else None))
        return self._key

    def structure_key(self, what: str, device: torch.device | str | None = None, *extra) -> tuple:
        """Key in ``MASK_CACHE`` of something built from the policy, layout and joint views only (not padding)."""
        return (what, None if device is None else str(torch.device(device)), *extra, *self._keys()[0])

    def cache_key(self, what: str, device: torch.device | str | None = None, *extra) -> tuple:
        """Key of a mask built from this one in ``MASK_CACHE``: ``what`` was built, on which device, from which
        policy, layout, padding and joint views (only what changes the mask: no padding is ``None``)."""
        return (*self.structure_key(what, device, *extra), self._keys()[1])

    def _pair_allowed(self, qa: StreamSegment, kb: StreamSegment, q: torch.Tensor, k: torch.Tensor):
        return self.policy.rule(qa.name, kb.name).allowed(q, k, qa.rate, kb.rate)

    def dense(self, device: torch.device | str | None = None) -> torch.Tensor:
        """Boolean mask ``(b or 1, 1, N, N)``, True where a query may attend to a key (SDPA's convention).

        Built once per (policy, lengths, padding, joint views, device) and kept in ``MASK_CACHE``."""
        if self._dense is not None:
            return self._dense
        device = device or (self.key_valid.device if self.key_valid is not None else "cpu")
        if self.padded:
            self._dense = MASK_CACHE.get(self.cache_key("dense", device), lambda: self._build_padded(device))
        else:
            self._dense = self.structure(device)
        return self._dense

    def structure(self, device: torch.device | str) -> torch.Tensor:
        """The mask without padding ``(b or 1, 1, N, N)``: the policy on this layout, joint views applied."""
        return MASK_CACHE.get(self.structure_key("structure", device), lambda: self._build_structure(device))

    def _build_structure(self, device: torch.device | str) -> torch.Tensor:
        n = self.size
        base = torch.zeros(n, n, dtype=torch.bool, device=device)
        for qa in self.segments:
            q = torch.arange(qa.length, device=device)[:, None]
            for kb in self.segments:
                k = torch.arange(kb.length, device=device)[None, :]
                block = self._pair_allowed(qa, kb, q, k)
                base[qa.offset : qa.offset + qa.length, kb.offset : kb.offset + kb.length] = block
        mask = base[None]  # (1, N, N)
        if self.switched:
            mask = mask.expand(self._batch_size(), n, n).clone()
            for s, seg in enumerate(self.segments):
                rows = slice(seg.offset, seg.offset + seg.length)
                own = torch.zeros(n, dtype=torch.bool, device=device)
                own[rows] = True
                off = ~self.joint_view[:, s].to(device)  # (b,)
                mask[off, rows, :] &= own
        return mask.unsqueeze(1)

    def _build_padded(self, device: torch.device | str) -> torch.Tensor:
        valid = self.key_valid.to(device)
        mask = self.structure(device)[:, 0] & valid[:, None, :]
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
        # a bucketed mask (padding_from) reads them even where they change nothing: one traced graph per bucket
        read = self.per_sample or self.padding_from is not None
        key_valid = self.key_valid if read else None
        joint_view = self.joint_view if read else None
        # rules[s][t]: stream s's queries over stream t's keys (bound here: nothing rational left to trace)
        rules = [[self.policy.rule(qa.name, kb.name).bind(qa.rate, kb.rate) for kb in segments] for qa in segments]
        spans = [(seg.offset, seg.offset + seg.length) for seg in segments]

        def mask_mod(b, h, q_idx, kv_idx):
            allowed = torch.zeros_like(q_idx, dtype=torch.bool)
            for s, (q_start, q_stop) in enumerate(spans):
                in_q = (q_idx >= q_start) & (q_idx < q_stop)
                for t, (k_start, k_stop) in enumerate(spans):
                    in_k = (kv_idx >= k_start) & (kv_idx < k_stop)
                    ok = in_q & in_k & rules[s][t](q_idx - q_start, kv_idx - k_start)
                    if joint_view is not None and t != s:
                        ok = ok & joint_view[b, s]
                    allowed = allowed | ok
            if key_valid is not None:
                row = b if key_valid.shape[0] > 1 else 0  # one row of padding shared by the whole batch
                k_ok = key_valid[row, kv_idx]
                allowed = (allowed & k_ok) | (~key_valid[row, q_idx] & k_ok)
            return allowed

        return mask_mod

    def block_mask(self, device: torch.device | str, block_size: int = 128, compile: bool | None = None):
        """FlexAttention ``BlockMask`` for this mask, built once per (policy, lengths, padding, joint views,
        device, block size) and kept in ``MASK_CACHE``; with ``padding_from`` its block tables are built once
        for every padding that starts at or after it."""
        if self._block is None:
            from torch.nn.attention.flex_attention import BlockMask, create_block_mask

            if self._padding_in_range():
                key = self.structure_key("block_tables", device, block_size, self.padding_from)
                tables = MASK_CACHE.get(key, lambda: self._stored_block_tables(key, device, block_size))
                self._block = BlockMask.from_kv_blocks(
                    *tables, BLOCK_SIZE=block_size, mask_mod=self.mask_mod(), seq_lengths=(self.size, self.size)
                )
                return self._block
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

    def _padding_in_range(self) -> bool:
        """Whether ``padding_from`` is set and every key before it is real in every sample."""
        if self.padding_from is None:
            return False
        if not self.padded:
            return True
        return all(
            bool(self.key_valid[:, seg.offset : seg.offset + start].all())
            for seg, start in zip(self.segments, self.padding_from, strict=True)
        )

    def _stored_block_tables(self, key: tuple, device, block_size: int) -> tuple[torch.Tensor, ...]:
        """The block tables from ``$MMFLOW_BLOCK_TABLE_DIR`` (safetensors, one file per bucket and torch
        version), built and stored there when missing or unreadable; built alone when the variable is unset."""
        folder = os.environ.get(BLOCK_TABLE_DIR_ENV)
        if not folder:
            return self._build_block_tables(device, block_size)
        stamp = repr((torch.__version__, key))
        path = Path(folder) / f"block-tables-{hashlib.sha256(stamp.encode()).hexdigest()[:32]}.safetensors"
        blocks = -(-self.size // block_size)
        batch = self._batch_size() if self.switched else 1
        if path.is_file():
            try:
                return _read_block_tables(path, stamp, device, batch, blocks)
            except (OSError, ValueError, KeyError) as error:
                logger.warning("block tables in %s are unusable (%s); building them again", path, error)
        tables = self._build_block_tables(device, block_size)
        with atomic_path(path) as tmp:
            save_file({name: t.cpu() for name, t in zip(BLOCK_TABLE_NAMES, tables, strict=True)}, str(tmp),
                      metadata={"key": stamp})
        return tables

    def _build_block_tables(self, device: torch.device | str, block_size: int) -> tuple[torch.Tensor, ...]:
        """FlexAttention block tables (partial, then full blocks) valid for any padding past ``padding_from``.

        A block is full when the policy allows all of it and none of its keys may be padding; it is partial
        (``mask_mod`` decides) when the policy allows some of it or some of its queries may be padding
        (a padding query sees every real key)."""
        n = self.size
        maybe = torch.zeros(n, dtype=torch.bool, device=device)
        for seg, start in zip(self.segments, self.padding_from, strict=True):
            maybe[seg.offset + start : seg.offset + seg.length] = True
        structure = self.structure(device)[:, 0]
        blocks = -(-n // block_size)

        def per_block(mask: torch.Tensor, reduce) -> torch.Tensor:
            padded = torch.zeros(mask.shape[0], blocks * block_size, blocks * block_size, dtype=torch.bool, device=device)
            padded[:, :n, :n] = mask
            return reduce(reduce(padded.view(-1, blocks, block_size, blocks, block_size), 4), 2)

        some = per_block(structure | maybe[None, :, None], lambda t, dim: t.any(dim))
        full = per_block(structure & ~maybe[None, None, :], lambda t, dim: t.all(dim))
        return (*_block_table(some & ~full), *_block_table(full))


BLOCK_TABLE_DIR_ENV = "MMFLOW_BLOCK_TABLE_DIR"
"""Environment variable naming a folder where bucketed BlockMask tables are kept between runs (unset: none)."""
BLOCK_TABLE_NAMES = ("kv_num_blocks", "kv_indices", "full_kv_num_blocks", "full_kv_indices")


def _read_block_tables(path: Path, stamp: str, device, batch: int, blocks: int) -> tuple[torch.Tensor, ...]:
    """Stored block tables, checked against the key they were built for and the shapes and ranges they need."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as stored:
            if (stored.metadata() or {}).get("key") != stamp:
                raise ValueError("built for another mask")
            tables = tuple(stored.get_tensor(name) for name in BLOCK_TABLE_NAMES)
    except SafetensorError as error:
        raise ValueError(str(error)) from error
    for name, table in zip(BLOCK_TABLE_NAMES, tables, strict=True):
        shape = (batch, 1, blocks) if "num" in name else (batch, 1, blocks, blocks)
        high = blocks if "num" in name else blocks - 1
        if table.dtype != torch.int32 or tuple(table.shape) != shape or table.min() < 0 or table.max() > high:
            raise ValueError(f"{name} is {table.dtype} {tuple(table.shape)}, expected int32 {shape} in [0, {high}]")
    return tuple(table.to(device) for table in tables)


def _block_table(blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, Q blocks, KV blocks)`` bool -> FlexAttention's (count ``(B, 1, Q)``, indices ``(B, 1, Q, KV)``)."""
    count = blocks.sum(-1, dtype=torch.int32)
    order = torch.argsort(blocks.to(torch.uint8), dim=-1, descending=True, stable=True).to(torch.int32)
    return count[:, None].contiguous(), order[:, None].contiguous()


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
