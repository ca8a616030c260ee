"""``sim_o``: speaker similarity by F5-TTS's SIM-o protocol (WavLM-Large + ECAPA-TDNN, UniSpeech's verifier).

The protocol (F5-TTS 1.1.22 ``f5_tts/eval/utils_eval.py``, ``run_sim``): ``wavlm_large_finetune.pth`` (UniSpeech's
speaker-verification fine-tune, loaded with ``torch.load(weights_only=True)``, its ``"model"`` entry), the generated
wav and the ORIGINAL prompt recording (not a vocoder resynthesis) each resampled to 16 kHz with torchaudio's default
``Resample`` (:func:`mmflow_audio_f5tts.audio_io.sinc_resample`), one embedding per file, their cosine; the
benchmark figure is the mean. F5-TTS loads the file with ``strict=False``; here every key of the file must be
used and every weight of the model must come from it, so a file of another layout is refused instead of silently
leaving random or pretrained weights in place.
"""

from __future__ import annotations

import logging
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmflow.codecs import InputError
from mmflow.evaluation.options import check_options, device_option, path_option

from .ecapa import EcapaHead
from .speaker import DEFAULT_REFERENCE, REFERENCE_HELP, SpeakerSimilarity, reference_kind
from .wavlm import PREFIX, WavLMHiddenStates, official_to_hf, wavlm_config

logger = logging.getLogger(__name__)

RATE = 16_000
OPTIONS = {
    "checkpoint": "UniSpeech's wavlm_large_finetune.pth (required)",
    "device": "cpu (default), cuda, ...",
    "reference": REFERENCE_HELP,
}
WHERE = ("F5-TTS's SIM-o uses UniSpeech's WavLM-Large speaker-verification checkpoint wavlm_large_finetune.pth "
         "(linked from microsoft/UniSpeech downstreams/speaker_verification/README.md and F5-TTS "
         "src/f5_tts/eval/README.md, a Google Drive download): pass --metric-option sim_o.checkpoint=PATH")


class SpeakerVerifier(nn.Module):
    """WavLM hidden states -> ECAPA-TDNN embedding, for one 16 kHz waveform at a time (as F5-TTS scores)."""

    def __init__(self, wavlm: WavLMHiddenStates, head: EcapaHead) -> None:
        super().__init__()
        self.feature_extract = wavlm
        self.head = head

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.head(self.feature_extract(wave))


def read_official_weights(path: Path) -> dict[str, torch.Tensor]:
    """The ``"model"`` state dict of ``wavlm_large_finetune.pth``, read as plain tensors (never unpickling code)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as error:
        # torch's message goes on to suggest weights_only=False; only the part naming what was refused is kept.
        found = re.search(r"Unsupported (?:global: GLOBAL [\w.]+|operand \S+)", str(error))
        reason = found.group(0) if found else str(error).splitlines()[0] if str(error) else type(error).__name__
        raise InputError(f"sim_o.checkpoint={path}: cannot be read as plain tensors with torch.load("
                         f"weights_only=True), as F5-TTS reads it ({reason}). mmflow never unpickles objects from "
                         f"a weights file. {WHERE}") from error
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model"), dict):
        keys = list(checkpoint)[:5] if isinstance(checkpoint, dict) else "-"
        raise InputError(f"sim_o.checkpoint={path}: expected a dict with a 'model' state dict (UniSpeech's "
                         f"layout), got {type(checkpoint).__name__} with keys {keys}. {WHERE}")
    return checkpoint["model"]


def build_verifier(weights: Mapping[str, torch.Tensor], source: str = "checkpoint") -> SpeakerVerifier:
    """The verifier with every weight from ``weights`` (UniSpeech's key layout); every key must be used."""
    wavlm_weights = {key[len(PREFIX):]: value for key, value in weights.items() if key.startswith(PREFIX)}
    head_weights = {key: value for key, value in weights.items() if not key.startswith("feature_extract.")}
    stray = sorted(key for key in weights if key.startswith("feature_extract.") and not key.startswith(PREFIX))
    unmapped = sorted(PREFIX + key for key in wavlm_weights if official_to_hf(key) is None)
    if stray or unmapped:
        raise InputError(f"{source}: keys that are not WavLM weights: {(stray + unmapped)[:8]}. {WHERE}")
    if not wavlm_weights:
        raise InputError(f"{source}: no WavLM weights ({PREFIX}*) in it; not UniSpeech's fine-tuned verifier. "
                         f"{WHERE}")
    try:
        wavlm = WavLMHiddenStates(wavlm_config(wavlm_weights))
        head = EcapaHead.sized_like(head_weights)
    except (KeyError, ValueError) as error:
        raise InputError(f"{source}: not the layout of UniSpeech's WavLM-Large ECAPA-TDNN ({error}). {WHERE}"
                         ) from error
    for module, state, part in ((wavlm.model, {official_to_hf(k): v for k, v in wavlm_weights.items()}, "WavLM"),
                                (head, head_weights, "ECAPA-TDNN")):
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as error:
            raise InputError(f"{source}: its {part} weights do not fit ({error}). {WHERE}") from error
    return SpeakerVerifier(wavlm, head).eval()


def load_wave_16k(path: Path) -> torch.Tensor:
    """First channel of an audio file at 16 kHz, resampled as F5-TTS does (torchaudio's default sinc)."""
    from ..audio_io import read_audio, sinc_resample

    audio, rate = read_audio(path)
    return torch.from_numpy(np.ascontiguousarray(sinc_resample(audio[0], rate, RATE)))


class SimO(SpeakerSimilarity):
    """F5-TTS's SIM-o (see the module docstring)."""

    name = "sim_o"
    batch_size = 4

    def __init__(self, verifier: SpeakerVerifier, device: str = "cpu", reference: str = DEFAULT_REFERENCE) -> None:
        super().__init__(reference)
        self.verifier = verifier.to(device)
        self.device = device

    @torch.no_grad()
    def embed(self, path: Path) -> torch.Tensor:
        return self.verifier(load_wave_16k(path).to(self.device))

    def similarity(self, generated: Path, reference: Path) -> float:
        return F.cosine_similarity(self.embed(generated), self.embed(reference))[0].item()


def make_sim_o(options: Mapping[str, str], workdir: Path) -> SimO:
    """Factory for ``mmflow_metrics``; refuses to run without the official checkpoint (no offline stand-in: the
    offline speaker proxy is the separate metric ``speaker_sim_ge2e``)."""
    options = check_options("metric", "sim_o", options, OPTIONS)
    path = path_option(options, "checkpoint", f"{WHERE}. Without it, 'speaker_sim_ge2e' (resemblyzer's GE2E "
                       f"encoder, a different metric) runs offline", required=True)
    reference, device = reference_kind(options), device_option(options, default="cpu")
    verifier = build_verifier(read_official_weights(path), source=f"sim_o.checkpoint={path}")
    logger.info("sim_o: UniSpeech WavLM-Large ECAPA-TDNN from %s", path)
    return SimO(verifier, device=device, reference=reference)
