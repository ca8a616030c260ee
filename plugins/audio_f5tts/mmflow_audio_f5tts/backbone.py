"""The F5-TTS DiT as an mmflow stream backbone, so its attention can join MMDiT's joint attention.

The module tree, parameter names and shapes equal F5-TTS's ``DiT`` (``f5_tts.model.backbones.dit``), so an
official checkpoint loads after stripping its ``ema_model.transformer.`` prefix (see ``checkpoint.py``).
The numerics follow F5-TTS exactly, including its quirks:

* Text ids are vocabulary ids with batch padding -1; the embedding shifts them by +1 so that row 0 is the
  *filler* token that also pads the text up to the mel length.
* The text encoder (4 ConvNeXt-V2 blocks) normalises with GRN over the whole padded sequence, so text
  features depend on the padded length. ``isolate_padding=True`` restricts it to each sample's valid frames
  (then a padded batch gives what one-by-one calls give; with F5's weights that is a small deviation).
* v1 (``text_mask_padding=True``) zeroes filler positions around every text block; v0 processes them.
* v0 rotates only the first head (``rope_heads=1``); v1 rotates all heads.
* Classifier-free guidance hides the audio condition and the text; the filler mask still comes from the real
  text (it is computed before the text is dropped).

Shape letters: ``b`` batch, ``n`` mel frames, ``t`` text tokens, ``c`` mel channels, ``D`` width, ``T`` text width.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mmflow.attention import attend
from mmflow.backbone import StreamBackbone, hide_dropped
from mmflow.layers import AdaLayerNormFinal, ConvPositionEmbedding, DiTBlock, TimestepEmbedding
from mmflow.masks import MaskPolicy, StreamSegment, build_attention_mask
from mmflow.positions import RotaryEmbedding, apply_rotary, rotary_table
from mmflow.streams import StreamBatch

from .mel import FRAME_RATE, N_MELS

TEXT_KEY = "text"
"""``StreamBatch.extras`` key of the text token ids (``(b, t)`` int, vocabulary ids, padding -1)."""
TEXT_CONDITIONING_MODES = ("filler", "aligned")
"""``filler``: F5-TTS's token ids padded with filler up to the mel length (the released checkpoints).
``aligned``: one token id per mel frame, e.g. the phoneme spoken at that frame (``phonemes.frame_phoneme_ids``)."""
MAX_TEXT_POSITIONS = 8192
"""Rows of the text encoder's sinusoidal table (F5-TTS 1.1.x; about 87 s of audio)."""

_BASE = {"dim": 1024, "depth": 22, "heads": 16, "ff_mult": 2, "text_dim": 512, "conv_layers": 4}
_SMALL = {"dim": 768, "depth": 18, "heads": 12, "ff_mult": 2, "text_dim": 512, "conv_layers": 4}
_V1 = {"text_mask_padding": True, "rope_heads": None}
_V0 = {"text_mask_padding": False, "rope_heads": 1}

F5TTS_CONFIGS: dict[str, dict] = {
    "F5TTS_v1_Base": {**_BASE, **_V1},
    "F5TTS_Base": {**_BASE, **_V0},
    "F5TTS_v1_Small": {**_SMALL, **_V1},
    "F5TTS_Small": {**_SMALL, **_V0},
}
"""Backbone configs of the released F5-TTS models (F5-TTS's ``configs/*.yaml`` ``arch`` sections, renamed).

They leave out ``text_num_embeds``: it is the size of the checkpoint's ``vocab.txt`` (2545 for the releases).
v0 and v1 share every weight shape; only ``text_mask_padding`` and ``rope_heads`` differ.
"""

_F5_ARCH_NAMES = {"mel_dim": "channels", "pe_attn_head": "rope_heads"}
_F5_IGNORED = {"attn_backend", "attn_mask_enabled", "checkpoint_activations"}


def f5tts_config(name: str) -> dict:
    """A copy of a named config from :data:`F5TTS_CONFIGS` (raises naming the known ones)."""
    if name not in F5TTS_CONFIGS:
        raise KeyError(f"unknown F5-TTS config {name!r}; known configs: {sorted(F5TTS_CONFIGS)}")
    return dict(F5TTS_CONFIGS[name])


def config_from_f5_arch(arch: dict) -> dict:
    """Translate an F5-TTS ``model.arch`` dict (its yaml names) into :class:`F5TTSBackbone` keyword arguments.

    ``attn_backend``, ``attn_mask_enabled`` and ``checkpoint_activations`` are dropped: attention is run by
    mmflow (padding is masked by ``MMDiT(mask_padding=...)``) and activation checkpointing is a training detail.
    """
    config = {}
    for key, value in arch.items():
        if key in _F5_IGNORED:
            continue
        config[_F5_ARCH_NAMES.get(key, key)] = value
    return config


class GRN(nn.Module):
    """Global response normalisation (ConvNeXt-V2): scale features by their L2 energy over the sequence.

    ``valid`` (optional) restricts the energy to real frames, which makes the result independent of padding.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, dim))

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:  # x: (b, n, C)
        energy_input = x if valid is None else x.masked_fill(~valid[..., None], 0.0)
        energy = torch.norm(energy_input, p=2, dim=1, keepdim=True)  # (b, 1, C)
        scale = energy / (energy.mean(dim=-1, keepdim=True) + 1e-6)
        return self.gamma * (x * scale) + self.beta + x


class ConvNeXtV2Block(nn.Module):
    """Residual block: depthwise conv (k=7) → LayerNorm → Linear → GELU (erf) → GRN → Linear."""

    def __init__(self, dim: int, intermediate_dim: int):
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, intermediate_dim)
        self.act = nn.GELU()
        self.grn = GRN(intermediate_dim)
        self.pwconv2 = nn.Linear(intermediate_dim, dim)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:  # x: (b, n, T)
        h = self.dwconv(x.transpose(1, 2)).transpose(1, 2)
        h = self.act(self.pwconv1(self.norm(h)))
        return x + self.pwconv2(self.grn(h, valid))


def sinusoidal_table(dim: int, length: int, base: float = 10000.0) -> torch.Tensor:
    """``(length, dim)`` absolute positions: row p = [cos(p·f), sin(p·f)] with f_k = base^(-2k/dim) (halves)."""
    freqs = 1.0 / (base ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim))
    angles = torch.outer(torch.arange(length, dtype=torch.float32), freqs)  # (length, dim/2)
    return torch.cat((torch.cos(angles), torch.sin(angles)), dim=-1)


class TextEmbedding(nn.Module):
    """Token ids → per-frame text features ``(b, n, T)``, the text padded with filler tokens to the mel length."""

    def __init__(
        self, num_embeds: int, dim: int, mask_padding: bool, conv_layers: int, isolate_padding: bool
    ):
        super().__init__()
        self.text_embed = nn.Embedding(num_embeds + 1, dim)  # row 0: filler / padding
        self.mask_padding, self.isolate_padding = mask_padding, isolate_padding
        if conv_layers > 0:
            self.register_buffer("freqs_cis", sinusoidal_table(dim, MAX_TEXT_POSITIONS), persistent=False)
            self.text_blocks = nn.Sequential(*(ConvNeXtV2Block(dim, dim * 2) for _ in range(conv_layers)))
        else:
            self.text_blocks = None

    def forward(self, text: torch.Tensor, valid: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
        """``text`` ``(b, t)`` vocabulary ids (pad -1), ``valid`` ``(b, n)``, ``drop`` ``(b,)`` → ``(b, n, T)``."""
        n = valid.shape[1]
        if n > MAX_TEXT_POSITIONS and self.text_blocks is not None:
            raise ValueError(
                f"{n} mel frames exceed the text encoder's {MAX_TEXT_POSITIONS} positions "
                f"({MAX_TEXT_POSITIONS / float(FRAME_RATE):.1f} s); generate shorter chunks"
            )
        ids = F.pad(text[:, :n] + 1, (0, max(0, n - text.shape[1])), value=0)  # (b, n), filler 0
        ids = ids.masked_fill(~valid, 0)
        filler = ids == 0  # from the real text, before guidance hides it
        ids = ids.masked_fill(drop[:, None], 0)
        h = self.text_embed(ids).masked_fill(~valid[..., None], 0.0)  # (b, n, T)
        if self.text_blocks is None:
            return h
        h = h + self.freqs_cis[:n].to(h.dtype) * valid[..., None].to(h.dtype)
        hidden = filler if self.mask_padding else None
        if self.isolate_padding:
            hidden = ~valid if hidden is None else hidden | ~valid
        block_valid = valid if self.isolate_padding else None
        if hidden is not None:
            h = h.masked_fill(hidden[..., None], 0.0)
        for block in self.text_blocks:
            h = block(h, block_valid)
            if hidden is not None:
                h = h.masked_fill(hidden[..., None], 0.0)
        return h


class InputEmbedding(nn.Module):
    """concat(noisy mel, audio condition, text features) → width, plus the convolutional position embedding."""

    def __init__(self, channels: int, text_dim: int, dim: int):
        super().__init__()
        self.proj = nn.Linear(2 * channels + text_dim, dim)
        self.conv_pos_embed = ConvPositionEmbedding(dim)

    def forward(self, x, cond, text, valid):  # (b, n, c), (b, n, c), (b, n, T), (b, n) → (b, n, D)
        h = self.proj(torch.cat((x, cond, text), dim=-1))
        return self.conv_pos_embed(h, valid) + h


class F5TTSBackbone(StreamBackbone):
    """F5-TTS's DiT (F5TTS_v1_Base, F5TTS_Base, Small...) as the backbone of an mmflow mel stream.

    Used by ``MMDiT`` through ``embed``/``output`` (text ids in ``batch.extras["text"]``, the audio condition is
    ``batch.context()``), or alone through ``forward`` with F5-TTS's signature.

    Args:
        channels: Mel channels (F5's ``mel_dim``, 100).
        cond_channels: Must be 0; F5-TTS has no per-frame condition besides the audio context.
        dim, depth, heads, dim_head, dropout, ff_mult: Transformer size (as F5's ``DiT``).
        text_num_embeds: Vocabulary size (the embedding has one more row, the filler).
        text_dim: Text feature width (default ``channels``).
        text_mask_padding: v1 behaviour (True) or v0 (False), see the module docstring.
        conv_layers: ConvNeXt-V2 blocks of the text encoder.
        rope_heads: Rotary on all heads (None, v1) or the first ``rope_heads`` (F5's ``pe_attn_head``; 1 for v0).
        isolate_padding: Keep padding frames out of the text encoder (needed for batch == one-by-one; off
            for F5 parity).
        text_conditioning: ``"filler"`` (F5-TTS: any number of tokens, filler-padded to the mel length) or
            ``"aligned"`` (exactly one token per mel frame, ``(b, n)``, padding -1). Same weights either way;
            aligned only adds the length check, because a small model cannot learn the alignment itself.
        qk_norm, long_skip_connection, text_embedding_average_upsampling: F5 options that no released model
            uses; only their off values are accepted.
    """

    def __init__(
        self,
        channels: int = N_MELS,
        cond_channels: int = 0,
        *,
        dim: int,
        depth: int = 8,
        heads: int = 8,
        dim_head: int = 64,
        dropout: float = 0.1,
        ff_mult: float = 4,
        text_num_embeds: int = 256,
        text_dim: int | None = None,
        text_mask_padding: bool = True,
        conv_layers: int = 0,
        rope_heads: int | None = None,
        isolate_padding: bool = False,
        text_conditioning: str = "filler",
        qk_norm: str | None = None,
        long_skip_connection: bool = False,
        text_embedding_average_upsampling: bool = False,
    ):
        super().__init__()
        unsupported = {
            "qk_norm": qk_norm is not None,
            "long_skip_connection": bool(long_skip_connection),
            "text_embedding_average_upsampling": bool(text_embedding_average_upsampling),
        }
        if any(unsupported.values()):
            names = [name for name, used in unsupported.items() if used]
            raise ValueError(
                f"F5TTSBackbone does not implement {names} (no released F5-TTS model uses them); "
                f"leave them at qk_norm=None, long_skip_connection=False, text_embedding_average_upsampling=False"
            )
        if cond_channels:
            raise ValueError(
                f"F5TTSBackbone takes no per-frame condition (cond_channels must be 0, got {cond_channels}); its "
                f"only conditions are the audio context and the text in batch.extras[{TEXT_KEY!r}]"
            )
        if text_conditioning not in TEXT_CONDITIONING_MODES:
            raise ValueError(
                f"text_conditioning must be one of {TEXT_CONDITIONING_MODES}, got {text_conditioning!r}"
            )
        if rope_heads is not None and not 1 <= rope_heads <= heads:
            raise ValueError(f"rope_heads must be None or in [1, {heads}], got {rope_heads}")
        text_dim = channels if text_dim is None else text_dim
        self.channels, self.cond_channels = channels, cond_channels
        self.heads, self.dim_head, self.rope_heads = heads, dim_head, rope_heads
        self.text_conditioning = text_conditioning
        self.time_embed = TimestepEmbedding(dim)
        self.text_embed = TextEmbedding(
            text_num_embeds, text_dim, text_mask_padding, conv_layers, isolate_padding
        )
        self.input_embed = InputEmbedding(channels, text_dim, dim)
        self.rotary_embed = RotaryEmbedding(dim_head)
        self.transformer_blocks = nn.ModuleList(
            DiTBlock(dim, heads, dim_head, ff_mult, dropout) for _ in range(depth)
        )
        self.norm_out = AdaLayerNormFinal(dim)
        self.proj_out = nn.Linear(dim, channels)
        self._zero_init()

    def _zero_init(self):
        """As F5-TTS: zero AdaLN modulations and the output, so a fresh model predicts exactly 0."""
        layers = [block.attn_norm.linear for block in self.transformer_blocks] + [
            self.norm_out.linear,
            self.proj_out,
        ]
        for layer in layers:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    # ------------------------------------------------------------------------------------------- shared path

    def text_features(self, text: torch.Tensor, valid: torch.Tensor, drop_text: torch.Tensor) -> torch.Tensor:
        """Encoded text ``(b, n, T)``: independent of the noisy mel and the time, so samplers compute it once."""
        if text.is_floating_point() or text.ndim != 2 or text.shape[0] != valid.shape[0]:
            raise ValueError(
                f"text must be integer token ids of shape ({valid.shape[0]}, tokens) (vocabulary ids, padding -1), "
                f"got {text.dtype} {tuple(text.shape)}"
            )
        if self.text_conditioning == "aligned" and text.shape[1] != valid.shape[1]:
            raise ValueError(
                f"aligned text conditioning needs one phoneme id per mel frame: text has {text.shape[1]} ids but "
                f"the stream has {valid.shape[1]} frames; build the ids with "
                f"mmflow_audio_f5tts.phonemes.frame_phoneme_ids (pad with -1 to the batch's frame count)"
            )
        return self.text_embed(text, valid, drop_text)

    def embed_inputs(self, x, cond, text, time, valid, drop_audio_cond, drop_text, text_features=None):
        """Tokens ``(b, n, D)`` and the AdaLN conditioning ``(b, D)``; drops are ``(b,)`` bool per sample."""
        if text_features is None:
            text_features = self.text_features(text, valid, drop_text)
        h = self.input_embed(x, hide_dropped(cond, drop_audio_cond), text_features.to(x.dtype), valid)
        return h, self.time_embed(time)

    def output(self, h: torch.Tensor, c: torch.Tensor, batch: StreamBatch | None = None) -> torch.Tensor:
        return self.proj_out(self.norm_out(h, c))

    # ------------------------------------------------------------------------------------------- MMDiT path

    def _text(self, batch: StreamBatch) -> torch.Tensor:
        if TEXT_KEY not in batch.extras:
            raise KeyError(
                f"the F5-TTS backbone needs the text token ids in StreamBatch.extras[{TEXT_KEY!r}] "
                f"((b, tokens) int64 vocabulary ids padded with -1, e.g. Vocab.batch_encode)"
            )
        return batch.extras[TEXT_KEY]

    def prepare(self, batch: StreamBatch, drop):
        return self.text_features(self._text(batch), batch.valid, drop)

    def embed(self, x_t, t, batch: StreamBatch, drop, prepared=None):
        text = self._text(batch)
        return self.embed_inputs(x_t, batch.context(), text, t, batch.valid, drop, drop, text_features=prepared)

    # ------------------------------------------------------------------------------------------- standalone

    def forward(
        self,
        x: torch.Tensor,
        cond: torch.Tensor,
        text: torch.Tensor,
        time: torch.Tensor | float,
        mask: torch.Tensor | None = None,
        drop_audio_cond: bool | torch.Tensor = False,
        drop_text: bool | torch.Tensor = False,
        mask_attention: bool = False,
    ) -> torch.Tensor:
        """F5-TTS's ``DiT.forward``: velocity ``(b, n, c)`` of one mel stream attending to itself alone.

        ``mask`` ``(b, n)`` marks valid frames (None: all). As F5-TTS (``attn_mask_enabled=False``) attention
        still sees padding keys unless ``mask_attention``. Drops are bools or ``(b,)`` per-sample tensors.
        """
        b, n, _ = x.shape
        valid = torch.ones(b, n, dtype=torch.bool, device=x.device) if mask is None else mask.bool()
        time = torch.as_tensor(time, dtype=x.dtype, device=x.device)
        time = time.expand(b) if time.ndim == 0 else time
        drop_cond, drop_txt = (
            torch.as_tensor(flag, device=x.device).bool().expand(b) for flag in (drop_audio_cond, drop_text)
        )
        h, c = self.embed_inputs(x, cond, text, time, valid, drop_cond, drop_txt)
        table = rotary_table(self.rotary_embed(torch.arange(n, device=x.device)[None]))  # (1, 1, n, dim_head)
        segment = StreamSegment("audio", FRAME_RATE, 0, n)
        attention_mask = build_attention_mask(
            MaskPolicy(), [segment], key_valid=valid if mask_attention else None
        )
        for block in self.transformer_blocks:
            (q, k, v), modulation = block.attention_inputs(h, c)
            q, k = apply_rotary(q, table, self.rope_heads), apply_rotary(k, table, self.rope_heads)
            h = block.finish(h, attend(q, k, v, attention_mask), modulation, valid)
        return self.output(h, c)


def parameter_count(backbone: nn.Module) -> int:
    """Number of parameters (337,096,804 for F5TTS_v1_Base with the 2545-token vocabulary)."""
    return sum(math.prod(p.shape) for p in backbone.parameters())
