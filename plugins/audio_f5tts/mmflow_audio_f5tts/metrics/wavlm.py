"""WavLM-Large as UniSpeech's speaker verifier runs it, built from transformers' ``WavLMModel``.

The verifier (F5-TTS ``f5_tts/eval/ecapa_tdnn.py``) gets WavLM through s3prl's ``wavlm_large`` upstream, so its
checkpoint names WavLM's weights ``feature_extract.model.<UniSpeech/fairseq name>``; :func:`official_to_hf` maps
them onto transformers' names (the same correspondence as transformers' own WavLM conversion script). What the
verifier reads is s3prl's ``hidden_states``: the input of each transformer layer and the encoder's output after its
final LayerNorm (25 tensors for 24 layers), which ``WavLMModel(output_hidden_states=True)`` returns for a
pre-LayerNorm ("stable layer norm") encoder. s3prl first layer-normalises the waveform (WavLM-Large's
``normalize: true``).

Sizes are read from the checkpoint. Not in it, and taken from WavLM-Large's own configuration (the ``cfg`` of
``WavLM-Large.pt`` that s3prl loads, also in transformers' ``microsoft/wavlm-large``): conv strides
(5, 2, 2, 2, 2, 2, 2), relative-position maximum distance 800, pre-LayerNorm layers, layer-norm feature extractor.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

PREFIX = "feature_extract.model."
STRIDES = (5, 2, 2, 2, 2, 2, 2)
MAX_DISTANCE = 800

_LAYER = re.compile(r"encoder\.layers\.(\d+)\.(.+)")
_CONV = re.compile(r"feature_extractor\.conv_layers\.(\d+)\.(0|2\.1)\.(weight|bias)")
_TOP = {
    "mask_emb": "masked_spec_embed",
    "layer_norm.weight": "feature_projection.layer_norm.weight",
    "layer_norm.bias": "feature_projection.layer_norm.bias",
    "post_extract_proj.weight": "feature_projection.projection.weight",
    "post_extract_proj.bias": "feature_projection.projection.bias",
    "encoder.pos_conv.0.bias": "encoder.pos_conv_embed.conv.bias",
    "encoder.pos_conv.0.weight_g": "encoder.pos_conv_embed.conv.parametrizations.weight.original0",
    "encoder.pos_conv.0.weight_v": "encoder.pos_conv_embed.conv.parametrizations.weight.original1",
    "encoder.layer_norm.weight": "encoder.layer_norm.weight",
    "encoder.layer_norm.bias": "encoder.layer_norm.bias",
}
_IN_LAYER = {
    "self_attn.grep_a": "attention.gru_rel_pos_const",
    "self_attn.grep_linear.": "attention.gru_rel_pos_linear.",
    "self_attn.relative_attention_bias.": "attention.rel_attn_embed.",
    "self_attn.k_proj.": "attention.k_proj.",
    "self_attn.v_proj.": "attention.v_proj.",
    "self_attn.q_proj.": "attention.q_proj.",
    "self_attn.out_proj.": "attention.out_proj.",
    "self_attn_layer_norm.": "layer_norm.",
    "fc1.": "feed_forward.intermediate_dense.",
    "fc2.": "feed_forward.output_dense.",
    "final_layer_norm.": "final_layer_norm.",
}


def official_to_hf(name: str) -> str | None:
    """transformers' name for a WavLM weight named as in UniSpeech (without ``feature_extract.model.``); None if
    the name is not a WavLM weight."""
    if name in _TOP:
        return _TOP[name]
    if match := _CONV.fullmatch(name):
        index, part, kind = match.groups()
        return f"feature_extractor.conv_layers.{index}.{'conv' if part == '0' else 'layer_norm'}.{kind}"
    if match := _LAYER.fullmatch(name):
        index, rest = match.groups()
        for old, new in _IN_LAYER.items():
            if rest.startswith(old):
                return f"encoder.layers.{index}.{new}{rest[len(old):]}"
    return None


def wavlm_config(weights: Mapping[str, torch.Tensor]):  # noqa: ANN201 - transformers.WavLMConfig
    """A ``WavLMConfig`` with the sizes of UniSpeech-named WavLM ``weights`` (see the module docstring)."""
    from transformers import WavLMConfig

    convs = sorted(int(m.group(1)) for key in weights if (m := _CONV.fullmatch(key)) and m.group(2) == "0"
                   and m.group(3) == "weight")
    if convs != list(range(len(STRIDES))):
        raise ValueError(f"expected {len(STRIDES)} feature-extractor convolutions, found {len(convs)}")
    if "feature_extractor.conv_layers.0.2.1.weight" not in weights:
        raise ValueError("expected WavLM-Large's layer-norm feature extractor (conv_layers.N.2.1.weight)")
    layers = sorted({int(m.group(1)) for key in weights if (m := _LAYER.fullmatch(key))})
    hidden = weights["post_extract_proj.weight"].shape[0]
    position = weights["encoder.pos_conv.0.weight_v"]
    buckets, heads = weights["encoder.layers.0.self_attn.relative_attention_bias.weight"].shape
    conv_weights = [weights[f"feature_extractor.conv_layers.{i}.0.weight"] for i in convs]
    return WavLMConfig(
        hidden_size=hidden, num_hidden_layers=len(layers), num_attention_heads=heads,
        intermediate_size=weights["encoder.layers.0.fc1.weight"].shape[0],
        conv_dim=[w.shape[0] for w in conv_weights], conv_kernel=[w.shape[2] for w in conv_weights],
        conv_stride=list(STRIDES), conv_bias="feature_extractor.conv_layers.0.0.bias" in weights,
        feat_extract_norm="layer", do_stable_layer_norm=True,
        num_conv_pos_embeddings=position.shape[2], num_conv_pos_embedding_groups=hidden // position.shape[1],
        num_buckets=buckets, max_bucket_distance=MAX_DISTANCE,
        hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0,
        final_dropout=0.0, layerdrop=0.0)


class WavLMHiddenStates(nn.Module):
    """A 16 kHz waveform ``(samples,)`` -> s3prl's WavLM ``hidden_states``, stacked:
    ``(layers + 1, 1, frames, dim)``."""

    def __init__(self, config) -> None:  # noqa: ANN001 - transformers.WavLMConfig
        super().__init__()
        from transformers import WavLMModel

        self.model = WavLMModel(config)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        wave = F.layer_norm(wave, wave.shape)
        out = self.model(wave[None], output_hidden_states=True)
        # transformers records each layer's input and the last layer's output before the final LayerNorm; s3prl's
        # last hidden state is the encoder's output, after it.
        return torch.stack([*out.hidden_states[:-1], out.last_hidden_state])
