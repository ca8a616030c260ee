"""Rotary position embeddings and how streams of different frame rates share them.

The rotary layout is F5-TTS's (from x-transformers): interleaved channel pairs ``(2j, 2j+1)`` rotated by
``θ = position · base^(-2j/d)``, base 10000, applied to q and k after the head split, on all heads or on the
first ``rope_heads`` heads only (F5-TTS v0 rotates head 0 alone).

Alignment policies give each stream's frames a position so that joint attention sees time consistently:

- ``index``: position = frame index (one stream alone, or streams that should not be aligned).
- ``scaled``: position = p / L · L_ref with L a sample's valid length and L_ref the largest L among the
  scaled streams (JAM-Flow, section 4.4). Frames at the same time get the same position.
- ``seconds``: position = time in seconds × a reference rate (by default the fastest stream's rate), which
  keeps positions aligned even when the streams' lengths do not match exactly.

Shape letters: ``b`` batch, ``h`` heads, ``n`` frames, ``d`` head width, ``r`` rotated channels.
"""

from __future__ import annotations

from collections.abc import Mapping
from fractions import Fraction

import torch
from torch import nn

from .streams import StreamSpec


class RotaryEmbedding(nn.Module):
    """Rotary frequencies for head width ``dim_head``; ``inv_freq`` is a persistent buffer, as in F5-TTS."""

    def __init__(self, dim_head: int, base: float = 10000.0):
        super().__init__()
        if dim_head % 2:
            raise ValueError(f"rotary embeddings need an even head width, got {dim_head}")
        inv_freq = 1.0 / (base ** (torch.arange(0, dim_head, 2).float() / dim_head))
        self.register_buffer("inv_freq", inv_freq)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        """``(b, n)`` positions → ``(b, n, dim_head)`` angles, each repeated for its channel pair."""
        with torch.autocast(device_type=positions.device.type, enabled=False):
            angles = positions.float().unsqueeze(-1) * self.inv_freq.float()  # (b, n, d/2)
        return angles.repeat_interleave(2, dim=-1)


def _rotate_pairs(x: torch.Tensor) -> torch.Tensor:
    """(x0, x1) → (−x1, x0) for every interleaved pair."""
    pairs = x.unflatten(-1, (-1, 2))
    return torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)


def rotary_table(angles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of ``(b, n, r)`` angles, shaped ``(b, 1, n, r)`` to broadcast over heads.

    Compute it once per forward pass and share it by every layer's q and k.
    """
    angles = angles.unsqueeze(1)
    return angles.cos(), angles.sin()


def apply_rotary(
    x: torch.Tensor, table: tuple[torch.Tensor, torch.Tensor], rope_heads: int | None = None
) -> torch.Tensor:
    """Rotate ``x`` ``(b, h, n, d)`` by a ``rotary_table``; channels past its width pass through.

    ``rope_heads=None`` rotates every head; an integer rotates only the first ``rope_heads`` heads. The rotation
    runs in at least float32 (bf16 inputs would lose the phase precision) and returns ``x``'s dtype.
    """
    cos, sin = table
    rotated_channels = cos.shape[-1]
    heads = x.shape[1] if rope_heads is None else rope_heads
    part = x[:, :heads, :, :rotated_channels]
    compute = part.to(torch.promote_types(x.dtype, torch.float32))
    out = (compute * cos + _rotate_pairs(compute) * sin).to(x.dtype)
    if heads == x.shape[1] and rotated_channels == x.shape[-1]:
        return out
    result = x.clone()
    result[:, :heads, :, :rotated_channels] = out
    return result


def stream_positions(
    specs: Mapping[str, StreamSpec],
    lengths: Mapping[str, torch.Tensor],
    num_frames: Mapping[str, int],
    reference_rate: Fraction | None = None,
) -> dict[str, torch.Tensor]:
    """Rotary positions ``(b, n)`` for each stream under its spec's policy.

    Args:
        specs: The streams taking part (their ``position`` field picks the policy).
        lengths: Valid frames per sample for each stream, ``(b,)``.
        num_frames: Padded frame count for each stream.
        reference_rate: Rate for the ``seconds`` policy; default the fastest stream's rate.
    """
    if reference_rate is None:
        reference_rate = max(spec.frame_rate for spec in specs.values())
    scaled = [name for name, spec in specs.items() if spec.position == "scaled"]
    reference_length = None
    if scaled:
        reference_length = torch.stack([lengths[name].double() for name in scaled]).amax(dim=0)  # (b,)
    positions = {}
    for name, spec in specs.items():
        device = lengths[name].device
        index = torch.arange(num_frames[name], device=device, dtype=torch.float64)[None, :]  # (1, n)
        if spec.position == "index":
            pos = index.expand(lengths[name].shape[0], -1)
        elif spec.position == "scaled":
            pos = index * reference_length[:, None] / lengths[name].double()[:, None]  # exact when L == L_ref
        else:  # seconds
            pos = (index * float(reference_rate / spec.frame_rate)).expand(lengths[name].shape[0], -1)
        positions[name] = pos.float()
    return positions
