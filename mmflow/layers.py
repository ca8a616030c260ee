"""Building blocks shared by every stream backbone: timestep embedding, AdaLN-Zero, feed-forward, the DiT block.

Parameter names follow F5-TTS's checkpoints (``attn_norm.linear``, ``attn.to_q``, ``attn.to_out.0``,
``ff.ff.0.0``, ``ff.ff.2``, ``time_embed.time_mlp.0``, ``norm_out.linear``...) so official files map onto these
modules by a prefix alone.

A ``DiTBlock`` is split around its attention (``attention_inputs`` → attention → ``finish``) because the
attention of a block may run jointly with other streams' blocks; the block itself never knows.

Shape letters: ``b`` batch, ``n`` frames, ``h`` heads, ``d`` head width, ``D`` model width.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class SinusoidalEmbedding(nn.Module):
    """sin/cos features of a scalar in [0, 1], scaled by 1000 (F5-TTS's time features)."""

    def __init__(self, dim: int, scale: float = 1000.0):
        super().__init__()
        self.dim, self.scale = dim, scale

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        freqs = torch.exp(torch.arange(half, device=t.device).float() * (-math.log(10000) / (half - 1)))
        angles = self.scale * t.float()[:, None] * freqs[None, :]
        return torch.cat((angles.sin(), angles.cos()), dim=-1).to(t.dtype if t.is_floating_point() else torch.float32)


class TimestepEmbedding(nn.Module):
    """Flow time t ``(b,)`` → conditioning vector ``(b, D)``."""

    def __init__(self, dim: int, freq_dim: int = 256):
        super().__init__()
        self.time_embed = SinusoidalEmbedding(freq_dim)
        self.time_mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.time_mlp(self.time_embed(t))


class ConvPositionEmbedding(nn.Module):
    """Two grouped 1-D convolutions with Mish, added to the input; padding frames are zeroed around each conv."""

    def __init__(self, dim: int, kernel_size: int = 31, groups: int = 16):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"conv position kernel must be odd, got {kernel_size}")
        if dim % groups:
            raise ValueError(f"conv position groups ({groups}) must divide the width ({dim})")
        pad = kernel_size // 2
        self.conv1d = nn.Sequential(
            nn.Conv1d(dim, dim, kernel_size, groups=groups, padding=pad),
            nn.Mish(),
            nn.Conv1d(dim, dim, kernel_size, groups=groups, padding=pad),
            nn.Mish(),
        )

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        if valid is not None:
            x = x.masked_fill(~valid[..., None], 0.0)
        out = x.transpose(1, 2)  # (b, D, n)
        for layer in self.conv1d:
            out = layer(out)
            if valid is not None and isinstance(layer, nn.Conv1d):
                out = out.masked_fill(~valid[:, None, :], 0.0)
        out = out.transpose(1, 2)
        if valid is not None:
            out = out.masked_fill(~valid[..., None], 0.0)
        return out


class AdaLayerNorm(nn.Module):
    """AdaLN-Zero: LayerNorm modulated by the conditioning vector; six chunks (shift, scale, gate) × (attn, ff)."""

    def __init__(self, dim: int):
        super().__init__()
        self.silu = nn.SiLU()
        self.linear = nn.Linear(dim, dim * 6)
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)

    def forward(self, x: torch.Tensor, c: torch.Tensor):
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.linear(self.silu(c)).chunk(6, dim=1)
        x = self.norm(x) * (1 + scale_msa[:, None]) + shift_msa[:, None]
        return x, gate_msa, shift_mlp, scale_mlp, gate_mlp


class AdaLayerNormFinal(nn.Module):
    """The output AdaLN: two chunks, scale first then shift."""

    def __init__(self, dim: int):
        super().__init__()
        self.silu = nn.SiLU()
        self.linear = nn.Linear(dim, dim * 2)
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        scale, shift = self.linear(self.silu(c)).chunk(2, dim=1)
        return self.norm(x) * (1 + scale)[:, None, :] + shift[:, None, :]


class FeedForward(nn.Module):
    """Linear → GELU(tanh) → dropout → Linear."""

    def __init__(self, dim: int, mult: float = 4, dropout: float = 0.0):
        super().__init__()
        inner = int(dim * mult)
        self.ff = nn.Sequential(
            nn.Sequential(nn.Linear(dim, inner), nn.GELU(approximate="tanh")), nn.Dropout(dropout), nn.Linear(inner, dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ff(x)


class AttentionProjections(nn.Module):
    """The q/k/v and output projections of one stream's attention (the attention itself runs elsewhere)."""

    def __init__(self, dim: int, heads: int, dim_head: int = 64, dropout: float = 0.0):
        super().__init__()
        inner = heads * dim_head
        self.heads, self.dim_head = heads, dim_head
        self.to_q = nn.Linear(dim, inner)
        self.to_k = nn.Linear(dim, inner)
        self.to_v = nn.Linear(dim, inner)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim), nn.Dropout(dropout)])

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(b, n, D)`` → three ``(b, h, n, d)`` tensors."""
        b, n, _ = x.shape
        split = lambda t: t.view(b, n, self.heads, self.dim_head).transpose(1, 2)  # noqa: E731
        return split(self.to_q(x)), split(self.to_k(x)), split(self.to_v(x))

    def out(self, attended: torch.Tensor) -> torch.Tensor:
        """``(b, h, n, d)`` → ``(b, n, D)``."""
        b, h, n, d = attended.shape
        merged = attended.transpose(1, 2).reshape(b, n, h * d)
        for layer in self.to_out:
            merged = layer(merged)
        return merged


class DiTBlock(nn.Module):
    """AdaLN-Zero transformer block whose attention is computed by the caller (alone or jointly)."""

    def __init__(self, dim: int, heads: int, dim_head: int = 64, ff_mult: float = 4, dropout: float = 0.0):
        super().__init__()
        self.attn_norm = AdaLayerNorm(dim)
        self.attn = AttentionProjections(dim, heads, dim_head, dropout)
        self.ff_norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.ff = FeedForward(dim, ff_mult, dropout)

    def attention_inputs(self, x: torch.Tensor, c: torch.Tensor):
        """Normalise and project: returns ``(q, k, v)`` ``(b, h, n, d)`` and the modulation for ``finish``."""
        normed, *modulation = self.attn_norm(x, c)
        return self.attn.qkv(normed), modulation

    def finish(self, x: torch.Tensor, attended: torch.Tensor, modulation, valid: torch.Tensor | None = None):
        """Residual attention update with its gate, then the gated feed-forward."""
        gate_msa, shift_mlp, scale_mlp, gate_mlp = modulation
        attn_out = self.attn.out(attended)
        if valid is not None:
            attn_out = attn_out.masked_fill(~valid[..., None], 0.0)
        x = x + gate_msa[:, None] * attn_out
        ff_in = self.ff_norm(x) * (1 + scale_mlp[:, None]) + shift_mlp[:, None]
        return x + gate_mlp[:, None] * self.ff(ff_in)
