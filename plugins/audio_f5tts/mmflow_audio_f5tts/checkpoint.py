"""Loading official F5-TTS checkpoints into an mmflow ``MMDiT`` with one ``audio`` stream.

Released files hold only the EMA weights: a flat ``.safetensors`` (``ema_model.transformer.*`` plus the EMA
counters ``initted`` and ``step``) or a ``.pt`` with ``{"ema_model_state_dict": ...}`` (training checkpoints
also carry ``model_state_dict``, optimizer and scheduler). The DiT keys of ``F5TTSBackbone`` equal F5-TTS's,
so loading is: pick the state dict, strip the prefix, load strictly.

v1 and v0 files have the same keys and shapes (they differ in forward semantics only), so which config a file
needs cannot be read from it: the caller names it (``config="F5TTS_v1_Base"`` or ``"F5TTS_Base"``).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import NamedTuple

import torch

from mmflow import MMDiT
from mmflow.checkpoints import state_dict_problems

from .backbone import F5TTS_CONFIGS, F5TTSBackbone, f5tts_config
from .mel import FRAME_RATE, N_MELS
from .text import Vocab

logger = logging.getLogger(__name__)

EMA_PREFIX = "ema_model.transformer."
MODEL_PREFIX = "transformer."
EMA_COUNTERS = ("initted", "step")
# Mel buffers of pre-1.0 checkpoints; F5-TTS's loader deletes them too (the mel front end has no weights).
LEGACY_MEL_KEYS = re.compile(r"^(ema_model\.)?mel_spec\.mel_stft\.")
STREAM = "audio"


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded into the F5-TTS backbone; the message says what it looks like."""


class LoadedF5TTS(NamedTuple):
    """What :func:`from_f5tts` returns: the model (eval mode) and the checkpoint's vocabulary."""

    model: MMDiT
    vocab: Vocab


def read_checkpoint(path: str | os.PathLike[str]) -> dict:
    """The raw contents of a ``.safetensors`` (flat tensors) or ``.pt``/``.ckpt`` (``weights_only`` pickle) file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as error:
            raise CheckpointError(
                f"{path}: not a readable safetensors file ({error}); it may be truncated, download it again"
            ) from error
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - truncated zip, bad pickle, forbidden object: all "unreadable"
        raise CheckpointError(
            f"{path}: cannot read it as a PyTorch checkpoint ({type(error).__name__}: {error}); it may be truncated "
            f"or not a checkpoint. Official files are .safetensors or .pt; download it again"
        ) from error


def load_f5tts_state_dict(path: str | os.PathLike[str], use_ema: bool = True) -> dict[str, torch.Tensor]:
    """The DiT state dict of an official F5-TTS file, keys as ``F5TTSBackbone``'s (prefix stripped).

    ``use_ema=False`` takes the online (non-EMA) weights of a training checkpoint instead.
    """
    raw = read_checkpoint(path)
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: expected a dict of tensors, got {type(raw).__name__}")
    if use_ema:
        if "ema_model_state_dict" in raw:
            raw = raw["ema_model_state_dict"]
        prefix = EMA_PREFIX
    else:
        if "model_state_dict" not in raw:
            raise CheckpointError(
                f"{path}: has no 'model_state_dict' (released files keep only EMA weights); use use_ema=True"
            )
        raw, prefix = raw["model_state_dict"], MODEL_PREFIX
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise CheckpointError(
            f"{path}: expected a state dict (name → tensor); top-level keys are {sorted(raw)[:10] if isinstance(raw, dict) else type(raw).__name__}"
        )
    state, foreign = {}, []
    for key, value in raw.items():
        if key.startswith(prefix):
            state[key[len(prefix) :]] = value
        elif key in EMA_COUNTERS or LEGACY_MEL_KEYS.match(key):
            continue
        else:
            foreign.append(key)
    if foreign or not state:
        raise CheckpointError(
            f"{path}: {len(foreign)} key(s) outside the F5-TTS layout (expected '{prefix}*' plus {list(EMA_COUNTERS)}): "
            f"{_first(sorted(foreign))}. {_looks_like(raw)}"
        )
    return state


def describe_state_dict(state: dict[str, torch.Tensor]) -> dict:
    """The DiT architecture a state dict implies (dim, depth, heads, text size...), for error messages."""
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"transformer_blocks\.(\d+)\.", k))}
    text_blocks = {int(m.group(1)) for k in state if (m := re.match(r"text_embed\.text_blocks\.(\d+)\.", k))}
    found = {"depth": len(blocks), "conv_layers": len(text_blocks)}
    if "time_embed.time_mlp.0.weight" in state:
        found["dim"] = state["time_embed.time_mlp.0.weight"].shape[0]
    if "transformer_blocks.0.attn.to_q.weight" in state:
        found["heads"] = state["transformer_blocks.0.attn.to_q.weight"].shape[0] // 64
    if "transformer_blocks.0.ff.ff.0.0.weight" in state and "dim" in found:
        found["ff_mult"] = state["transformer_blocks.0.ff.ff.0.0.weight"].shape[0] / found["dim"]
    if "text_embed.text_embed.weight" in state:
        rows, found["text_dim"] = state["text_embed.text_embed.weight"].shape
        found["text_num_embeds"] = rows - 1
    return found


def _looks_like(state: dict) -> str:
    keys = [k.removeprefix(EMA_PREFIX).removeprefix(MODEL_PREFIX) for k in state]
    if any(k.startswith("layers.") for k in keys) and any(k.startswith("norm_out.g") for k in keys):
        return "It looks like an E2-TTS (UNetT) checkpoint, which this backbone does not implement."
    if not any(k.startswith("transformer_blocks.") for k in keys):
        return "It does not look like an F5-TTS DiT checkpoint at all."
    return "It looks like an F5-TTS DiT checkpoint saved with a different prefix."


def _config_hint(state: dict, found: dict) -> str:
    """Which named configs fit the file's shapes, or what else it looks like."""
    looks = _looks_like(state)
    if "E2-TTS" in looks:
        return looks
    shape_keys = ("dim", "depth", "heads", "ff_mult", "text_dim", "conv_layers")
    names = [name for name, cfg in F5TTS_CONFIGS.items() if all(found.get(k) == cfg[k] for k in shape_keys)]
    if names:
        return f"Its shapes fit config {' or '.join(names)} (v1 and v0 share shapes; pick the one it was trained as)."
    return "Pass the backbone config it was trained with (a dict), or use the right file."


def load_backbone_weights(backbone: F5TTSBackbone, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` strictly; on any missing, unexpected or mis-shaped key raise one error listing them all."""
    expected = backbone.state_dict()
    problems = state_dict_problems(expected, state)
    if problems:
        found = describe_state_dict(state)
        raise CheckpointError(
            f"{source} does not match the model: " + "; ".join(problems) + f". The file implies {found}, the "
            f"model has {describe_state_dict(expected)}. {_config_hint(state, found)}"
        )
    backbone.load_state_dict(state, strict=True)


def audio_stream_config(
    config: str | dict,
    text_num_embeds: int,
    mask_padding: bool = False,
    *,
    text_conditioning: str | None = None,
) -> dict:
    """The ``audio`` entry of an ``MMDiT`` streams config: an F5-TTS backbone at 93.75 frames/s, 100 mel bins.

    ``config`` is a name from ``F5TTS_CONFIGS`` or a backbone config dict. ``mask_padding`` turns on the
    backbone's ``isolate_padding`` (padding kept out of the text encoder; see :func:`from_f5tts`).
    ``text_conditioning`` (``"filler"`` or ``"aligned"``, see ``F5TTSBackbone``) overrides the config's;
    None keeps it (filler unless the config says otherwise).
    """
    backbone_config = f5tts_config(config) if isinstance(config, str) else dict(config)
    backbone_config.update(text_num_embeds=text_num_embeds, isolate_padding=mask_padding)
    if text_conditioning is not None:
        backbone_config["text_conditioning"] = text_conditioning
    return {
        "frame_rate": f"{FRAME_RATE.numerator}/{FRAME_RATE.denominator}",
        "channels": N_MELS,
        "position": "scaled",
        "backbone": "f5tts_dit",
        "backbone_config": backbone_config,
    }


def build_f5tts_mmdit(
    config: str | dict,
    text_num_embeds: int,
    mask_padding: bool = False,
    *,
    text_conditioning: str | None = None,
) -> MMDiT:
    """An ``MMDiT`` with one F5-TTS ``audio`` stream, weights as initialised.

    ``mask_padding`` turns on both the attention key-padding mask and the backbone's ``isolate_padding``;
    ``text_conditioning`` as in :func:`audio_stream_config`.
    """
    stream = audio_stream_config(config, text_num_embeds, mask_padding, text_conditioning=text_conditioning)
    return MMDiT(streams={STREAM: stream}, joint_schedule="none", mask_padding=mask_padding)


def from_f5tts(
    checkpoint_path: str | os.PathLike[str],
    vocab_path_or_folder: str | os.PathLike[str],
    config: str | dict = "F5TTS_v1_Base",
    *,
    mask_padding: bool = False,
    use_ema: bool = True,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> LoadedF5TTS:
    """Build an ``MMDiT`` with one ``audio`` stream from an official F5-TTS checkpoint and its ``vocab.txt``.

    Args:
        checkpoint_path: ``model_*.safetensors`` or ``model_*.pt``.
        vocab_path_or_folder: The checkpoint's ``vocab.txt`` or the folder holding it.
        config: A name from ``F5TTS_CONFIGS`` (v1 and v0 files cannot be told apart by their keys) or a
            backbone config dict (without ``text_num_embeds``, which comes from the vocabulary).
        mask_padding: Hide padding in attention and in the text encoder, so a padded batch gives what one-by-one
            calls give. False (F5-TTS's behaviour) matches the reference numerically on padded batches.
        use_ema: Load the EMA weights (released files have only those).
    """
    vocab = Vocab.from_file(vocab_path_or_folder)
    state = load_f5tts_state_dict(checkpoint_path, use_ema=use_ema)
    file_vocab = describe_state_dict(state).get("text_num_embeds")
    if file_vocab is not None and file_vocab != len(vocab):
        raise CheckpointError(
            f"{vocab.source} has {len(vocab)} tokens but {checkpoint_path} embeds {file_vocab} (+1 filler row); "
            f"use the vocab.txt shipped with this checkpoint"
        )
    model = build_f5tts_mmdit(config, len(vocab), mask_padding)
    load_backbone_weights(model.backbones[STREAM], state, str(checkpoint_path))
    model.eval()
    if device is not None or dtype is not None:
        model.to(device=device, dtype=dtype)
    logger.info(
        "loaded %s (%s) from %s",
        config if isinstance(config, str) else "custom config",
        vocab,
        checkpoint_path,
    )
    return LoadedF5TTS(model, vocab)


def _first(items: list[str], limit: int = 10) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... and {len(items) - limit} more" if len(items) > limit else "")
