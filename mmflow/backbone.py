"""The stream backbone contract, and the generic DiT backbone that any 1-D stream can use.

A backbone owns everything of one stream: its input embedding, time embedding, rotary table, a stack of
``DiTBlock``s and its output head. ``MMDiT`` drives the blocks of all streams step by step and decides which
attentions run jointly. A backbone never sees guidance: ``drop`` only says which samples' conditions to hide.

Shape letters: ``b`` batch, ``n`` frames, ``c`` channels, ``k`` condition channels, ``D`` width.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from .layers import AdaLayerNormFinal, ConvPositionEmbedding, DiTBlock, TimestepEmbedding
from .positions import RotaryEmbedding
from .streams import StreamBatch


@runtime_checkable
class BlockProtocol(Protocol):
    """One transformer block as ``MMDiT`` drives it: the block computes its attention inputs, ``MMDiT`` runs the
    attention (alone or jointly with other streams, under the mask policy), the block finishes the layer."""

    def attention_inputs(self, x: torch.Tensor, c: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], Any]:
        """Tokens ``(b, n, D)`` and conditioning ``(b, D)`` → ``(q, k, v)`` each ``(b, heads, n, dim_head)``
        (rotary is applied by ``MMDiT``) and whatever ``finish`` needs again (e.g. AdaLN modulation)."""

    def finish(self, x: torch.Tensor, attended: torch.Tensor, modulation: Any,
               valid: torch.Tensor | None = None) -> torch.Tensor:
        """The layer's output tokens from its input ``x``, the attention output ``(b, heads, n, dim_head)`` and
        ``modulation``; ``valid`` ``(b, n)`` marks real frames (None: no padding)."""


@runtime_checkable
class BackboneProtocol(Protocol):
    """What ``MMDiT`` needs of a stream backbone (``StreamBackbone`` is a convenient base that provides it).

    Built as ``cls(channels=..., cond_channels=..., **backbone_config)``. Each forward pass calls ``prepare``
    once per sampling (step-invariant work), ``embed`` once per model call, then the blocks step by step, then
    ``output``. ``drop`` ``(b,)`` bool marks samples whose conditions (inpainting context, per-frame condition,
    extras such as text) must be hidden, as in the unconditional pass of classifier-free guidance.
    """

    transformer_blocks: Sequence[BlockProtocol]
    rotary_embed: RotaryEmbedding
    heads: int
    dim_head: int
    rope_heads: int | None

    @property
    def depth(self) -> int:
        """Number of blocks."""

    def prepare(self, batch: StreamBatch, drop: torch.Tensor) -> Any:
        """Features that depend on neither the noisy input nor the time (None when there are none)."""

    def embed(self, x_t: torch.Tensor, t: torch.Tensor, batch: StreamBatch, drop: torch.Tensor,
              prepared: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Noisy latent ``(b, n, c)`` and time ``(b,)`` → tokens ``(b, n, D)`` and the conditioning ``(b, D)``;
        ``prepared`` is what ``prepare`` returned for this batch and ``drop``."""

    def output(self, h: torch.Tensor, c: torch.Tensor, batch: StreamBatch) -> torch.Tensor:
        """Final tokens → velocity ``(b, n, c)``."""


def protocol_problems(backbone: object) -> list[str]:
    """The members of ``BackboneProtocol`` (and of its blocks' ``BlockProtocol``) that ``backbone`` lacks."""
    missing = [name for name in ("transformer_blocks", "rotary_embed", "heads", "dim_head", "rope_heads", "depth",
                                 "prepare", "embed", "output") if not hasattr(backbone, name)]
    for i, block in enumerate(getattr(backbone, "transformer_blocks", ())):
        missing += [f"transformer_blocks[{i}].{name}" for name in ("attention_inputs", "finish")
                    if not hasattr(block, name)]
    return missing


class StreamBackbone(nn.Module):
    """Base class of stream backbones.

    Subclasses set ``transformer_blocks`` (an ``nn.ModuleList`` of blocks following ``BlockProtocol``, e.g.
    ``DiTBlock``), ``rotary_embed``, ``heads``, ``dim_head`` and ``rope_heads`` (None: rotary on all heads; k: on
    the first k), and implement (``BackboneProtocol`` states the contract):

    - ``embed(x_t, t, batch, drop, prepared=None)`` → ``(h, c)``: tokens ``(b, n, D)`` and the conditioning
      vector ``(b, D)`` fed to every AdaLN. ``drop`` ``(b,)`` bool marks samples whose conditions (inpainting
      context and stream conditions) must be hidden, as for the unconditional pass of classifier-free guidance.
    - ``output(h, c, batch)`` → velocity ``(b, n, c)``.
    - optionally ``prepare(batch, drop)`` → step-invariant features (e.g. encoded text) that ``embed`` receives
      as ``prepared``; a sampler computes them once and passes them to every step, so no backbone keeps a cache.

    The constructor takes ``channels`` and ``cond_channels`` from the stream spec plus its own config.
    """

    transformer_blocks: nn.ModuleList
    rotary_embed: RotaryEmbedding
    heads: int
    dim_head: int
    rope_heads: int | None = None

    @property
    def depth(self) -> int:
        return len(self.transformer_blocks)

    def prepare(self, batch: StreamBatch, drop: torch.Tensor):
        """Work that does not depend on the noisy input or the time; None when there is none."""
        return None

    def embed(self, x_t: torch.Tensor, t: torch.Tensor, batch: StreamBatch, drop: torch.Tensor, prepared=None):
        raise NotImplementedError

    def output(self, h: torch.Tensor, c: torch.Tensor, batch: StreamBatch) -> torch.Tensor:
        raise NotImplementedError


def hide_dropped(x: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
    """Zero the rows of ``x`` whose sample is dropped."""
    return x * (~drop).to(x.dtype).view(-1, *([1] * (x.ndim - 1)))


class DiTBackbone(StreamBackbone):
    """Generic DiT backbone: concat(noisy x, inpainting context, per-frame condition) → width, conv positions,
    AdaLN-Zero blocks, final AdaLN and projection (zero-initialised, so a new model predicts 0).

    Args:
        channels: Generated channels per frame.
        cond_channels: Per-frame condition channels (0 for none).
        dim: Model width.
        depth: Number of blocks.
        heads: Attention heads.
        dim_head: Width of one head (streams that attend jointly must agree on heads and dim_head).
        ff_mult: Feed-forward expansion.
        dropout: Dropout in attention output and feed-forward.
        conv_pos_kernel: Kernel of the convolutional position embedding (0 turns it off).
        conv_pos_groups: Groups of that convolution.
        rope_heads: Rotary on all heads (None) or the first ``rope_heads``.
    """

    def __init__(
        self,
        channels: int,
        cond_channels: int = 0,
        dim: int = 256,
        depth: int = 4,
        heads: int = 4,
        dim_head: int = 64,
        ff_mult: float = 2,
        dropout: float = 0.0,
        conv_pos_kernel: int = 31,
        conv_pos_groups: int = 16,
        rope_heads: int | None = None,
    ):
        super().__init__()
        self.channels, self.cond_channels = channels, cond_channels
        self.heads, self.dim_head, self.rope_heads = heads, dim_head, rope_heads
        self.time_embed = TimestepEmbedding(dim)
        self.proj_in = nn.Linear(2 * channels + cond_channels, dim)
        self.conv_pos_embed = ConvPositionEmbedding(dim, conv_pos_kernel, conv_pos_groups) if conv_pos_kernel else None
        self.rotary_embed = RotaryEmbedding(dim_head)
        self.transformer_blocks = nn.ModuleList(DiTBlock(dim, heads, dim_head, ff_mult, dropout) for _ in range(depth))
        self.norm_out = AdaLayerNormFinal(dim)
        self.proj_out = nn.Linear(dim, channels)
        self._zero_init()

    def _zero_init(self):
        for block in self.transformer_blocks:
            nn.init.zeros_(block.attn_norm.linear.weight)
            nn.init.zeros_(block.attn_norm.linear.bias)
        for layer in (self.norm_out.linear, self.proj_out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def embed(self, x_t, t, batch, drop, prepared=None):
        parts = [x_t, hide_dropped(batch.context(), drop)]
        if self.cond_channels:
            parts.append(hide_dropped(batch.cond.to(x_t.dtype), drop))
        h = self.proj_in(torch.cat(parts, dim=-1))
        if self.conv_pos_embed is not None:
            h = h + self.conv_pos_embed(h, batch.valid)
        return h, self.time_embed(t)

    def output(self, h, c, batch):
        return self.proj_out(self.norm_out(h, c))
