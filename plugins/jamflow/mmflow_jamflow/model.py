"""Building a JAM-Flow model the paper's way (section 4): a pretrained F5-TTS audio stream, a new Motion-DiT of
the same depth and head layout, the earlier half of the layers attending jointly, scaled rotary positions and
the JAM-Flow masks (motion sees a local window; audio sees all audio and its own motion frame).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import NamedTuple

from mmflow_audio_f5tts.checkpoint import audio_stream_config, load_backbone_weights, load_f5tts_state_dict
from mmflow_audio_f5tts.text import Vocab
from mmflow_motion_liveportrait.motion_stream import motion_stream_config

from mmflow import MMDiT

logger = logging.getLogger(__name__)


class LoadedJAMFlow(NamedTuple):
    model: MMDiT
    vocab: Vocab


def jamflow_config(
    audio_stream: dict,
    motion_dim: int = 512,
    motion_ff_mult: float = 2,
    window_seconds: str | float = "0.25",
    joint_schedule: str | list[int] = "half",
    mask_padding: bool = True,
) -> dict:
    """The ``MMDiT`` config of JAM-Flow around an ``audio`` stream entry (``audio_stream_config``).

    The motion stream gets the audio stream's depth, heads and head width, so every layer has a partner and
    joint attention lines up; its width (``motion_dim``) may be smaller. ``window_seconds`` is the half-width of
    the motion stream's local window (the paper's N_window, which it does not state; 0.25 s = ±6 motion frames).
    """
    audio = audio_stream["backbone_config"]
    motion = motion_stream_config(
        dim=motion_dim, depth=audio["depth"], heads=audio["heads"], dim_head=audio.get("dim_head", 64),
        ff_mult=motion_ff_mult,
    )
    return {
        "streams": {"audio": audio_stream, "motion": motion},
        "joint_schedule": joint_schedule,
        "mask_policy": {"preset": "local_global", "global_stream": "audio", "local_stream": "motion",
                        "window_seconds": str(window_seconds)},
        "mask_padding": mask_padding,
    }


def jamflow_model_config(audio: str | Mapping, text_num_embeds: int, **options) -> dict:
    """The one way to turn an architecture into ``MMDiT`` arguments: ``audio`` is an F5-TTS architecture name or
    its DiT arguments (optionally with ``name`` and ``text_conditioning``); ``options`` go to ``jamflow_config``.
    ``build_jamflow`` and the training recipe both use it."""
    audio = {"name": audio} if isinstance(audio, str) else dict(audio)
    text_conditioning = audio.pop("text_conditioning", None)
    architecture = audio.pop("name") if "name" in audio else audio
    stream = audio_stream_config(architecture, text_num_embeds, options.get("mask_padding", True),
                                 text_conditioning=text_conditioning)
    return jamflow_config(stream, **options)


def build_jamflow(
    f5tts_checkpoint: str | os.PathLike[str],
    vocab_path_or_folder: str | os.PathLike[str],
    audio_config: str | dict = "F5TTS_v1_Base",
    **config_kwargs,
) -> LoadedJAMFlow:
    """A JAM-Flow ``MMDiT`` whose audio stream carries an official F5-TTS checkpoint (loaded strictly) and whose
    motion stream is new (zero-initialised output, as every DiT here). ``config_kwargs`` go to ``jamflow_config``.
    """
    vocab = Vocab.from_file(vocab_path_or_folder)
    model = MMDiT(**jamflow_model_config(audio_config, len(vocab), **config_kwargs))
    state = load_f5tts_state_dict(f5tts_checkpoint, use_ema=True)
    load_backbone_weights(model.backbones["audio"], state, str(f5tts_checkpoint))
    logger.info(
        "JAM-Flow: audio stream from %s, motion stream new (%d parameters), joint steps %s",
        f5tts_checkpoint, sum(p.numel() for p in model.backbones["motion"].parameters()), list(model.joint_steps),
    )
    return LoadedJAMFlow(model.eval(), vocab)
