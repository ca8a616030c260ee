"""Exact masked attention that runs the unmasked fast kernel on whole blocks of a stream mask.

A joint mask is mostly whole blocks: JAM-Flow's audio queries see *all* audio keys (63 % of the pairs at
10 s), and only a thin remainder needs a mask (the motion frame at an audio frame's time, motion's local
windows). The ``split`` backend attends, per query stream:

- the run of key streams it sees whole with SDPA *without* a mask (the fastest kernel);
- the other keys it sees: gathered when each row sees at most ``GATHER_MAX_KEYS`` of them (audio → its one
  motion frame), else masked SDPA over them; the two parts are merged exactly by their log-sum-exps;
- a stream that sees no stream whole (motion) goes in chunks of ``ROW_CHUNK`` rows, each masked SDPA over
  only the key spans its rows see, so a local window costs its width rather than the sequence length.

The merge needs a part's log-sum-exp. Without autograd it comes from the fused kernel itself (CPU flash
kernel; CUDA flash kernel for unmasked fp16/bf16). With autograd it must be differentiable, which no public
kernel offers, so the part gets one extra *sink* key whose score is exactly 0 (a zero key vector) and two
extra value channels: channel ``d`` is 1 on real keys, channel ``d + 1`` is 1 on the sink. With ``Z`` the
part's sum of exp(score) and ``N`` its sum of exp(score)·v, SDPA then returns ``N / (1 + Z)``,
``Z / (1 + Z)`` and ``1 / (1 + Z)``, from which ``N / Z`` and ``log Z`` follow with full relative precision
and autograd gives the exact backward on every device. Its limit is range: ``1 / (1 + Z)`` must not
underflow, so a row's log-sum-exp must stay within about ±80 of 0 in float32/bfloat16 (attention logits are
far smaller in practice); float16's range is too short, so the backend refuses float16. Key padding inside a
whole block rides on one more query/key channel that adds −1e4 to a padding key's score (sink path) or on an
additive key mask (fused path).

Shape letters: ``b`` batch, ``h`` heads, ``N`` joint tokens, ``n`` tokens of a part, ``d`` head width.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .masks import MASK_CACHE, AttentionMask, Full

logger = logging.getLogger(__name__)

SPLIT_DTYPES = frozenset({torch.float32, torch.float64, torch.bfloat16})
PADDING_SCORE = -1.0e4  # added to a padding key's score: exp() of it is exactly 0 next to any real score


@dataclass(frozen=True)
class RowBlock:
    """How the queries of one stream that sees some key streams whole (rows ``start:stop``) are attended.

    ``whole`` is the key range they all see unmasked, with ``whole_valid`` ``(b, n)`` marking its real keys
    when some are padding. ``rest`` are the other key ranges (``None``: the rows see none of them),
    ``rest_mask`` ``(b or 1, 1, rows, keys)`` which of those keys each row sees (``None``: all) and
    ``rest_any`` whether a row sees any. When every row sees at most ``GATHER_MAX_KEYS`` of them,
    ``gather``/``gather_valid`` ``(b or 1, rows, E)`` list them.
    """

    start: int
    stop: int
    whole: tuple[int, int]
    whole_valid: torch.Tensor | None
    rest: tuple[tuple[int, int], ...] | None
    rest_mask: torch.Tensor | None
    rest_any: torch.Tensor | None
    gather: torch.Tensor | None = None
    gather_valid: torch.Tensor | None = None
    additive: dict = field(default_factory=dict, compare=False)  # rest_mask as 0/−inf, per dtype (CPU kernel)


GATHER_MAX_KEYS = 16


def split_plan(mask: AttentionMask, device: torch.device | str) -> tuple[RowBlock | LocalBlock, ...]:
    """The ``split`` plan of ``mask``, built once per (policy, lengths, padding, joint views, device).

    A bucketed mask (``padding_from``, ``mmflow.buckets``) builds the plan's layout (which keys each block
    reads) once per bucket, for every padding past ``padding_from``, and only lays this mask's padding onto it."""
    plans = mask._plans
    key = str(torch.device(device))
    if key not in plans:
        if mask._padding_in_range():
            layout = MASK_CACHE.get(mask.structure_key("split", device, mask.padding_from),
                                    lambda: _build_plan(mask, device, _reach(mask, device), with_padding=False))
            plans[key] = _with_padding(layout, mask, device)
        else:
            plans[key] = MASK_CACHE.get(mask.cache_key("split", device),
                                        lambda: _build_plan(mask, device, mask.dense(device)))
    return plans[key]


def _reach(mask: AttentionMask, device) -> torch.Tensor:
    """``(b or 1, 1, N, N)``: every pair the mask may allow under any padding past ``padding_from`` (the policy's
    own pairs, and every key for a query that may be padding: a padding query sees all real keys)."""
    maybe = torch.zeros(mask.size, dtype=torch.bool, device=device)
    for segment, start in zip(mask.segments, mask.padding_from, strict=True):
        maybe[segment.offset + start : segment.offset + segment.length] = True
    return mask.structure(device) | maybe[None, None, :, None]


def _with_padding(layout: tuple[RowBlock | LocalBlock, ...], mask: AttentionMask, device):
    """The plan of ``mask``: a bucket's ``layout`` (whose keys hold every pair ``mask`` allows) with the masks
    of this padding, taken from ``mask.dense``."""
    dense = mask.dense(device)
    key_valid = _key_valid(mask, device)
    blocks = []
    for block in layout:
        rows = dense[:, :, block.start : block.stop]
        if isinstance(block, LocalBlock):
            local = _chunk_mask(rows, block.index, block.key_real, block.stop - block.start, block.chunk)
            blocks.append(dataclasses.replace(block, mask=local, additive={}))
            continue
        whole_valid = _whole_valid(key_valid, block.whole)
        if block.rest is None:
            blocks.append(RowBlock(block.start, block.stop, block.whole, whole_valid, None, None, None))
            continue
        rest_mask = torch.cat([rows[..., a:b] for a, b in block.rest], dim=-1)
        gather = gather_valid = None
        if block.gather is not None:
            gather = block.gather.expand(rest_mask.shape[0], -1, -1) if rest_mask.shape[0] > 1 else block.gather
            gather_valid = block.gather_valid & torch.gather(rest_mask[:, 0], 2, gather)
        rest_any = rest_mask.any(-1)
        blocks.append(RowBlock(block.start, block.stop, block.whole, whole_valid, block.rest,
                               None if bool(rest_mask.all()) else rest_mask, rest_any, gather, gather_valid))
    return tuple(blocks)


def _key_valid(mask: AttentionMask, device) -> torch.Tensor | None:
    return mask.key_valid.to(device) if mask.per_sample and mask.key_valid is not None else None


def _whole_valid(key_valid: torch.Tensor | None, whole: tuple[int, int]) -> torch.Tensor | None:
    """Which keys of the whole block are real, ``(b, n)``; None when all are."""
    if key_valid is None or bool(key_valid[:, whole[0] : whole[1]].all()):
        return None
    return key_valid[:, whole[0] : whole[1]]


def _whole_run(mask: AttentionMask, s: int) -> tuple[int, int] | None:
    """The longest run of adjacent key streams that every query of stream ``s`` sees whole (up to padding)."""
    segments = mask.segments
    switched = mask.per_sample and mask.joint_view is not None and not bool(mask.joint_view[:, s].all())
    query = segments[s]
    whole = [
        isinstance(mask.policy.rule(query.name, key.name), Full) and (key is query or not switched) and key.length > 0
        for key in segments
    ]
    best, run_start = None, None
    for i, flag in enumerate([*whole, False]):
        if flag and run_start is None:
            run_start = i
        elif not flag and run_start is not None:
            start, stop = segments[run_start].offset, segments[i - 1].offset + segments[i - 1].length
            if best is None or stop - start > best[1] - best[0]:
                best = (start, stop)
            run_start = None
    return best


def whole_share(mask: AttentionMask) -> float:
    """Share of all query-key pairs that ``split`` attends with the unmasked kernel (whole blocks)."""
    pairs = 0
    for s, segment in enumerate(mask.segments):
        whole = _whole_run(mask, s)
        if whole is not None:
            pairs += segment.length * (whole[1] - whole[0])
    return pairs / max(mask.size**2, 1)


def _rest_block(start: int, stop: int, whole, whole_valid, rest, rows: torch.Tensor) -> RowBlock:
    """A ``RowBlock`` whose rest keys ``rest`` are masked by the dense rows ``rows`` ``(b or 1, 1, n, N)``."""
    rest_mask = torch.cat([rows[..., a:b] for a, b in rest], dim=-1) if rest else None
    if rest_mask is None or not bool(rest_mask.any()):
        return RowBlock(start, stop, whole, whole_valid, None, None, None)
    rest_any = rest_mask.any(-1)
    counts = rest_mask.sum(-1)
    gather = gather_valid = None
    if int(counts.max()) <= GATHER_MAX_KEYS:
        width = int(counts.max())
        order = torch.sort(rest_mask[:, 0].to(torch.uint8), dim=-1, descending=True, stable=True).indices
        gather = order[..., :width]
        gather_valid = torch.arange(width, device=rows.device) < counts[:, 0, :, None]
    if bool(rest_mask.all()):
        rest_mask = None
    return RowBlock(start, stop, whole, whole_valid, rest, rest_mask, rest_any, gather, gather_valid)


ROW_CHUNK = 64


@dataclass(frozen=True)
class LocalBlock:
    """Queries of one stream that sees no stream whole (rows ``start:stop``), attended in chunks of ``chunk``
    rows, all chunks in one batched SDPA call: chunk ``c`` holds the queries ``rows[c·chunk:(c+1)·chunk]`` and
    sees the keys ``index[c]`` (the span of each key stream that some of its rows see, padded to a common
    width) under ``mask`` ``(b or 1, chunks, chunk, width)``; padded rows see their first key (their output
    is dropped), padded keys nobody."""

    start: int
    stop: int
    chunk: int
    rows: torch.Tensor  # (chunks·chunk,) query positions, the last one repeated into the padding
    index: torch.Tensor  # (chunks, width) key positions
    mask: torch.Tensor
    key_real: torch.Tensor  # (chunks, width): which entries of index are keys (the rest pad it to the width)
    additive: dict = field(default_factory=dict, compare=False)  # mask per (batch, dtype), shaped for SDPA


def _local_block(start: int, stop: int, rows: torch.Tensor, mask: AttentionMask) -> LocalBlock:
    """``LocalBlock`` for rows that see no stream whole: a local window costs its width, not the sequence."""
    n, chunk = stop - start, ROW_CHUNK
    chunks = -(-n // chunk)
    rows = F.pad(rows, (0, 0, 0, chunks * chunk - n))  # (b or 1, 1, chunks·chunk, N)
    indices = []
    for c in range(chunks):
        seen = rows[:, :, c * chunk : (c + 1) * chunk].any(dim=(0, 1, 2))  # (N,) keys some row sees
        spans = []
        for segment in mask.segments:
            hits = seen[segment.offset : segment.offset + segment.length].nonzero()
            if len(hits):
                spans.append(torch.arange(segment.offset + int(hits[0]), segment.offset + int(hits[-1]) + 1))
        indices.append(torch.cat(spans) if spans else torch.arange(mask.size))  # sees nothing: all keys
    width = max(len(i) for i in indices)
    index = torch.stack([F.pad(i, (0, width - len(i)), value=int(i[0])) for i in indices]).to(rows.device)
    key_real = torch.stack([torch.arange(width) < len(i) for i in indices]).to(rows.device)  # (chunks, width)
    row_index = torch.arange(start, start + chunks * chunk, device=rows.device).clamp_max(stop - 1)
    return LocalBlock(start, stop, chunk, row_index, index, _chunk_mask(rows, index, key_real, n, chunk), key_real)


def _chunk_mask(rows: torch.Tensor, index: torch.Tensor, key_real: torch.Tensor, n: int, chunk: int) -> torch.Tensor:
    """``LocalBlock.mask`` ``(b or 1, chunks, chunk, width)`` from the dense rows ``(b or 1, 1, n or more, N)``."""
    chunks, width = index.shape
    rows = F.pad(rows[:, :, :n], (0, 0, 0, chunks * chunk - n))
    chunked = rows[:, 0].view(rows.shape[0], chunks, chunk, -1)  # (b or 1, chunks, chunk, N)
    local = torch.gather(chunked, 3, index[None, :, None, :].expand(rows.shape[0], -1, chunk, -1))
    local &= key_real[None, :, None, :]
    row_real = (torch.arange(chunks * chunk, device=rows.device) < n).view(1, chunks, chunk, 1)
    return local | (~row_real & (torch.arange(width, device=rows.device) == 0))  # padded rows: their first key


def _local_mask(block: LocalBlock, heads: int, dtype) -> torch.Tensor:
    """``block.mask`` as an additive ``(b or 1, heads·chunks, chunk, width)`` mask in ``dtype``, built once."""
    key = (heads, dtype)
    if key not in block.additive:
        batch, chunks, chunk, width = block.mask.shape
        local = block.mask[:, None].expand(batch, heads, chunks, chunk, width).reshape(batch, -1, chunk, width)
        zeros = torch.zeros(local.shape, dtype=dtype, device=local.device)
        block.additive[key] = zeros.masked_fill(~local, float("-inf"))
    return block.additive[key]


def _local_attention(q, k, v, block: LocalBlock) -> torch.Tensor:
    """Attention of the rows of ``block``, every chunk in one SDPA call: chunks ride along the head axis,
    so queries, keys and outputs are views of one gather each."""
    b, h, _, d = q.shape
    chunks, width = block.index.shape

    def gathered(t, index, rows):
        return t.index_select(2, index).view(b, h * chunks, rows, -1)

    queries = gathered(q, block.rows, block.chunk)
    keys, values = gathered(k, block.index.reshape(-1), width), gathered(v, block.index.reshape(-1), width)
    out = F.scaled_dot_product_attention(queries, keys, values, attn_mask=_local_mask(block, h, q.dtype))
    return out.view(b, h, chunks * block.chunk, -1)[:, :, : block.stop - block.start]


def _build_plan(mask: AttentionMask, device, dense: torch.Tensor, with_padding: bool = True):
    """The blocks of ``mask`` read from the allowed pairs ``dense`` ``(b or 1, 1, N, N)``; without
    ``with_padding`` no whole block records its padding keys (a bucket's layout: ``_with_padding`` does)."""
    size = mask.size
    key_valid = _key_valid(mask, device) if with_padding else None
    blocks = []
    for s, segment in enumerate(mask.segments):
        start, stop = segment.offset, segment.offset + segment.length
        if start == stop:
            continue
        rows = dense[:, :, start:stop]
        whole = _whole_run(mask, s)
        if whole is None:
            blocks.append(_local_block(start, stop, rows, mask))
            continue
        rest = tuple(r for r in ((0, whole[0]), (whole[1], size)) if r[1] > r[0])
        blocks.append(_rest_block(start, stop, whole, _whole_valid(key_valid, whole), rest, rows))
    return tuple(blocks)


# ------------------------------------------------------------------------------------------------ parts
# Each part returns (o, lse): the attention output over its keys and the log of its softmax normaliser
# (−inf where a row sees none of its keys).


def _needs_grad(*tensors) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _kernel_part(q, k, v, mask: torch.Tensor | None, any_key: torch.Tensor | None):
    """A part through a fused kernel that returns its log-sum-exp (forward only: that output has no grad).

    CPU: the flash kernel, any additive mask. CUDA: the flash kernel, unmasked fp16/bf16 only. ``None`` where
    no such kernel applies (the caller then takes the sink path, which is exact everywhere)."""
    scale = q.shape[-1] ** -0.5
    if q.device.type == "cpu":
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, attn_mask=mask, scale=scale)
    elif q.device.type == "cuda" and mask is None and q.dtype in (torch.float16, torch.bfloat16) and _cuda_flash_ok[0]:
        try:
            out, lse = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, scale=scale)[:2]
        except RuntimeError as error:  # e.g. a GPU or head width the flash kernel does not support
            logger.warning("split attention: no fused CUDA kernel with a log-sum-exp (%s); using the sink path", error)
            _cuda_flash_ok[0] = False
            return None
    else:
        return None
    if any_key is not None:
        lse = lse.masked_fill(~any_key, float("-inf"))
    return out, lse


_cuda_flash_ok = [True]


def whole_block_kernel(device: torch.device | str, dtype: torch.dtype, grad: bool) -> str:
    """Which kernel attends the whole blocks for this device, dtype and autograd mode (for benchmarks)."""
    device = torch.device(device)
    cuda_flash = device.type == "cuda" and dtype in (torch.float16, torch.bfloat16) and _cuda_flash_ok[0]
    fused = device.type == "cpu" or cuda_flash
    return "fused kernel with log-sum-exp" if fused and not grad else "public SDPA with a sink key"


def _sink_part(q, k, v, mask: torch.Tensor | None = None, key_valid: torch.Tensor | None = None):
    """A part through public SDPA with a zero-score sink key and two value channels (module docstring), so
    autograd differentiates its log-sum-exp too."""
    b, h, n, d = q.shape
    dtype, device = q.dtype, q.device
    width = -(-(d + 2) // 8) * 8  # room for the extra channels, a multiple of 8 so fused kernels still apply

    def extend(t, channel_d, sink_row=None):
        """``t`` with channel d set, zeros up to ``width``, and optionally one more (sink) row."""
        rows = t.shape[-2]
        pad = torch.zeros(b, h, rows, width - d - 1, dtype=dtype, device=device)
        out = torch.cat([t, channel_d.expand(b, h, rows, 1), pad], dim=-1)
        return out if sink_row is None else torch.cat([out, sink_row.expand(b, h, 1, width)], dim=-2)

    zero = torch.zeros(1, 1, 1, 1, dtype=dtype, device=device)
    one = torch.ones(1, 1, 1, 1, dtype=dtype, device=device)
    bias = zero
    if key_valid is not None:  # channel d: query 1 × key (0 or −1e4·√d) adds −1e4 to a padding key's score
        bias = torch.zeros(key_valid.shape, dtype=dtype, device=device).masked_fill(~key_valid, PADDING_SCORE * d**0.5)
        bias = bias[:, None, :, None]
    sink_value = torch.zeros(1, 1, 1, width, dtype=dtype, device=device)
    sink_value[..., d + 1] = 1
    q_ext = extend(q, zero if key_valid is None else one)
    k_ext = extend(k, bias, torch.zeros(1, 1, 1, width, dtype=dtype, device=device))
    v_ext = extend(v, one, sink_value)
    if mask is not None:
        mask = torch.cat([mask, mask.new_ones(*mask.shape[:-1], 1)], dim=-1)  # every row sees the sink
    out = F.scaled_dot_product_attention(q_ext, k_ext, v_ext, attn_mask=mask, scale=d**-0.5)
    out = out.to(torch.promote_types(dtype, torch.float32))  # merge in float32 at least
    weighted, real, sink = out[..., :d], out[..., d], out[..., d + 1]
    seen = real > 0  # rows that see none of these keys get lse −inf, with finite gradients
    real = torch.where(seen, real, 1.0)
    return weighted / real[..., None], torch.where(seen, real.log() - sink.log(), float("-inf"))


def _gather_part(q, k, v, index: torch.Tensor, valid: torch.Tensor):
    """A part where each row sees at most a few listed keys: ``index``/``valid`` ``(b or 1, n, E)``."""
    b, h, n, d = q.shape
    width = index.shape[-1]
    if index.shape[0] == 1:  # the same keys for every sample: index_select is much faster than gather
        flat = index.reshape(-1)
        keys = k.index_select(2, flat).view(b, h, n, width, d)
        values = v.index_select(2, flat).view(b, h, n, width, -1)
    else:
        flat = index.reshape(index.shape[0], 1, n * width, 1)
        keys = torch.gather(k, 2, flat.expand(b, h, -1, d)).view(b, h, n, width, d)
        values = torch.gather(v, 2, flat.expand(b, h, -1, v.shape[-1])).view(b, h, n, width, -1)
    compute = torch.promote_types(q.dtype, torch.float32)
    valid = valid[:, None]
    if width == 1:  # one key per row (a frame's same-time partner): softmax over one key is that key
        score = torch.einsum("bhnd,bhnd->bhn", q.to(compute), keys[..., 0, :].to(compute)) * d**-0.5
        return values[..., 0, :], score.masked_fill(~valid[..., 0], float("-inf"))
    scores = torch.einsum("bhnd,bhned->bhne", q.to(compute), keys.to(compute)) * d**-0.5
    scores = scores.masked_fill(~valid, torch.finfo(compute).min)  # finite: no NaN gradients on empty rows
    lse = torch.logsumexp(scores, dim=-1)
    weights = torch.exp(scores - lse[..., None]) * valid
    return torch.einsum("bhne,bhned->bhnd", weights, values.to(compute)), lse.masked_fill(~valid.any(-1), float("-inf"))


def _merge(parts) -> torch.Tensor:
    """Two parts' ``(o, lse)`` merged into the attention over both key sets (in float32 at least)."""
    (o1, l1), (o2, l2) = parts
    compute = torch.promote_types(o1.dtype, torch.float32)
    share = torch.sigmoid(l2.to(compute) - l1.to(compute))  # part 2's share of the softmax mass: Z2 / (Z1 + Z2)
    return torch.lerp(o1.to(compute), o2.to(compute), share[..., None])


def _keys(t: torch.Tensor, ranges) -> torch.Tensor:
    pieces = [t[..., a:b, :] for a, b in ranges]
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=-2)


def _additive(block: RowBlock, dtype) -> torch.Tensor | None:
    """``rest_mask`` as an additive 0/−inf mask in ``dtype`` (what the CPU kernel takes), built once."""
    if block.rest_mask is None:
        return None
    if dtype not in block.additive:
        zeros = torch.zeros(block.rest_mask.shape, dtype=dtype, device=block.rest_mask.device)
        block.additive[dtype] = zeros.masked_fill(~block.rest_mask, float("-inf"))
    return block.additive[dtype]


def split_attention(q, k, v, mask: AttentionMask) -> torch.Tensor:
    """Attention of ``q`` ``(b, h, N, d)`` over ``k``, ``v`` under ``mask``, equal to SDPA with
    ``mask.dense()`` up to float rounding, forward and backward (see the module docstring)."""
    grad = _needs_grad(q, k, v)
    outputs = []
    for block in split_plan(mask, q.device):
        rows = q[:, :, block.start : block.stop]
        if isinstance(block, LocalBlock):
            outputs.append(_local_attention(q, k, v, block))
            continue
        a, b = block.whole
        k_whole, v_whole = k[:, :, a:b], v[:, :, a:b]
        whole = None
        if not grad:
            padding = None
            if block.whole_valid is not None:
                padding = torch.zeros(block.whole_valid.shape, dtype=q.dtype, device=q.device)
                padding = padding.masked_fill(~block.whole_valid, float("-inf"))[:, None, None, :]
            whole = _kernel_part(rows, k_whole, v_whole, padding, None)
        if whole is None:
            whole = _sink_part(rows, k_whole, v_whole, key_valid=block.whole_valid)
        if block.rest is None:
            outputs.append(whole[0].to(q.dtype))
            continue
        k_rest, v_rest = _keys(k, block.rest), _keys(v, block.rest)
        if block.gather is not None:
            rest = _gather_part(rows, k_rest, v_rest, block.gather, block.gather_valid)
        else:
            rest = None if grad else _kernel_part(rows, k_rest, v_rest, _additive(block, q.dtype), block.rest_any)
            if rest is None:
                rest = _sink_part(rows, k_rest, v_rest, mask=block.rest_mask)
        outputs.append(_merge((whole, rest)).to(q.dtype))
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=2)
