"""Mel → waveform for the F5-TTS speech stream: Vocos (``charactr/vocos-mel-24khz``) and a Griffin-Lim fallback.

:class:`Vocos` re-implements the mel Vocos vocoder (ConvNeXt backbone + inverse-STFT head) as a diffusers
model. Its parameter names equal the official ``pytorch_model.bin`` keys, so the released
``config.yaml`` + ``pytorch_model.bin`` folder loads unchanged with :meth:`Vocos.from_vocos_folder`
(strictly: any missing, unexpected or mis-shaped key is an error listing them). The only keys skipped are
the analysis-side mel buffers of Vocos's feature extractor, which decoding never uses.

:class:`GriffinLimVocoder` needs no weights: it inverts the mel filterbank with a pseudo-inverse and
iterates fast Griffin-Lim. It is intelligible but clearly lower quality; use it for tests and smoke runs.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from pathlib import Path
from typing import Any

import torch
import yaml
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from mmflow.checkpoints import state_dict_problems

from .mel import HOP_LENGTH, N_FFT, N_MELS, SAMPLE_RATE, WIN_LENGTH, mel_filterbank

logger = logging.getLogger(__name__)

VOCOS_CONFIG_FILE = "config.yaml"
VOCOS_WEIGHTS_FILE = "pytorch_model.bin"
MAX_MAGNITUDE = 1e2
"""Vocos caps predicted STFT magnitudes at 100 to guard against blow-ups; kept for identical output."""

# Buffers of the official feature extractor (torchaudio MelSpectrogram inside Vocos). They are present in
# the released file but only used to *analyse* audio, so the decoder skips them.
_ANALYSIS_ONLY_KEYS = (
    "feature_extractor.mel_spec.spectrogram.window",
    "feature_extractor.mel_spec.mel_scale.fb",
)
_FEATURE_CLASS = "vocos.feature_extractors.MelSpectrogramFeatures"
_BACKBONE_CLASS = "vocos.models.VocosBackbone"
_HEAD_CLASS = "vocos.heads.ISTFTHead"
# Accepted init_args per section with the defaults of the vocos classes (None: no default, or None itself).
_FEATURE_ARGS = {"sample_rate": 24000, "n_fft": 1024, "hop_length": 256, "n_mels": 100, "padding": "center"}
_BACKBONE_ARGS = dict.fromkeys(
    (
        "input_channels",
        "dim",
        "intermediate_dim",
        "num_layers",
        "layer_scale_init_value",
        "adanorm_num_embeddings",
    )
)
_HEAD_ARGS = {"dim": None, "n_fft": None, "hop_length": None, "padding": "same"}
_REQUIRED_ARGS = {"input_channels", "dim", "intermediate_dim", "num_layers", "n_fft", "hop_length"}


class VocoderCheckpointError(ValueError):
    """A vocoder folder whose config or weights do not match the mel Vocos layout."""


class ConvNeXtBlock(nn.Module):
    """Residual 1-D ConvNeXt block: depthwise conv (k=7) → LayerNorm → MLP (GELU) → layer scale."""

    def __init__(self, dim: int, intermediate_dim: int, layer_scale_init_value: float) -> None:
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, intermediate_dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(intermediate_dim, dim)
        if layer_scale_init_value > 0:
            self.gamma = nn.Parameter(torch.full((dim,), float(layer_scale_init_value)))
        else:
            self.gamma = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, dim, T]
        h = self.dwconv(x).transpose(1, 2)
        h = self.pwconv2(self.act(self.pwconv1(self.norm(h))))
        if self.gamma is not None:
            h = h * self.gamma
        return x + h.transpose(1, 2)


class VocosBackbone(nn.Module):
    """Mel ``[B, n_mels, T]`` → features ``[B, T, dim]`` at the same frame rate."""

    def __init__(
        self, input_channels: int, dim: int, intermediate_dim: int, num_layers: int, layer_scale: float
    ):
        super().__init__()
        self.embed = nn.Conv1d(input_channels, dim, kernel_size=7, padding=3)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.convnext = nn.ModuleList(
            ConvNeXtBlock(dim, intermediate_dim, layer_scale) for _ in range(num_layers)
        )
        self.final_layer_norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.embed(mel).transpose(1, 2)).transpose(1, 2)
        for block in self.convnext:
            x = block(x)
        return self.final_layer_norm(x.transpose(1, 2))


class InverseSTFT(nn.Module):
    """Inverse STFT with a Hann window; ``"center"`` or ``"same"`` framing as in Vocos.

    ``"center"`` is ``torch.istft(center=True)``: ``(T - 1) · hop`` samples. ``"same"`` trims
    ``(win - hop) / 2`` samples from each end of the overlap-add (``T · hop`` samples), which
    ``torch.istft`` cannot do because its window-overlap check fails at the untrimmed edges.
    """

    def __init__(self, n_fft: int, hop_length: int, padding: str) -> None:
        super().__init__()
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.padding = padding
        # A periodic hann_window(n) is a view of an (n + 1)-long storage, which safetensors refuses to save
        # (Accelerate's save_state/load_state of a training Vocos); give the buffer its own storage.
        self.register_buffer("window", torch.hann_window(n_fft).clone())

    def forward(self, spec: torch.Tensor) -> torch.Tensor:  # spec: complex [B, n_fft/2 + 1, T]
        if self.padding == "center":
            return torch.istft(spec, self.n_fft, self.hop_length, self.n_fft, self.window, center=True)
        frames = torch.fft.irfft(spec, self.n_fft, dim=1) * self.window[None, :, None]
        n_frames = frames.shape[-1]
        total = (n_frames - 1) * self.hop_length + self.n_fft
        trim = (self.n_fft - self.hop_length) // 2
        fold = dict(output_size=(1, total), kernel_size=(1, self.n_fft), stride=(1, self.hop_length))
        signal = nn.functional.fold(frames, **fold)[:, 0, 0, trim : total - trim]
        window_sq = self.window.square()[None, :, None].expand(1, -1, n_frames)
        envelope = nn.functional.fold(window_sq, **fold)[0, 0, 0, trim : total - trim]
        if bool((envelope <= 1e-11).any()):
            raise ValueError("InverseSTFT: window overlap vanishes; hop_length is too large for n_fft")
        return signal / envelope


class ISTFTHead(nn.Module):
    """Features ``[B, T, dim]`` → log-magnitude and phase per STFT bin → waveform."""

    def __init__(self, dim: int, n_fft: int, hop_length: int, padding: str) -> None:
        super().__init__()
        self.out = nn.Linear(dim, n_fft + 2)
        self.istft = InverseSTFT(n_fft, hop_length, padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        log_mag, phase = self.out(x).transpose(1, 2).float().chunk(2, dim=1)
        magnitude = torch.exp(log_mag).clamp(max=MAX_MAGNITUDE)
        spec = torch.complex(magnitude * torch.cos(phase), magnitude * torch.sin(phase))
        return self.istft(spec)


class Vocos(ModelMixin, ConfigMixin):
    """Mel Vocos vocoder: log-mel ``[B, n_mels, frames]`` (channel-first) → waveform ``[B, samples]`` (float32).

    The defaults are ``charactr/vocos-mel-24khz``, the vocoder of F5-TTS. With ``padding="center"`` the
    output has ``(frames - 1) · hop_length`` samples; with ``"same"`` ``frames · hop_length``.

    Args:
        n_mels: mel bins of the input (``input_channels`` of the backbone).
        dim / intermediate_dim / num_layers: ConvNeXt backbone size.
        layer_scale_init_value: initial layer scale; ``None`` means ``1 / num_layers`` (as Vocos).
        n_fft / hop_length / padding: the inverse STFT of the head.
        sample_rate: the rate of the produced audio (for callers; it does not change the computation).
    """

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        n_mels: int = N_MELS,
        dim: int = 512,
        intermediate_dim: int = 1536,
        num_layers: int = 8,
        layer_scale_init_value: float | None = None,
        n_fft: int = N_FFT,
        hop_length: int = HOP_LENGTH,
        padding: str = "center",
        sample_rate: int = SAMPLE_RATE,
    ) -> None:
        super().__init__()
        if padding not in ("center", "same"):
            raise ValueError(f"Vocos: padding must be 'center' or 'same', got {padding!r}")
        layer_scale = layer_scale_init_value or 1.0 / num_layers
        self.backbone = VocosBackbone(n_mels, dim, intermediate_dim, num_layers, layer_scale)
        self.head = ISTFTHead(dim, n_fft, hop_length, padding)

    @property
    def sample_rate(self) -> int:
        return int(self.config.sample_rate)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        if mel.ndim == 2:
            mel = mel[None]
        if mel.ndim != 3 or mel.shape[1] != self.config.n_mels:
            raise ValueError(
                f"Vocos: expected log-mel [B, {self.config.n_mels}, frames] (channel-first), got shape "
                f"{tuple(mel.shape)}; use mel.to_channel_first for [B, frames, {self.config.n_mels}] input"
            )
        return self.head(self.backbone(mel.to(self.dtype)))

    def decode(self, mel: torch.Tensor) -> torch.Tensor:
        """Alias of ``forward`` matching Vocos's and :class:`GriffinLimVocoder`'s ``decode``."""
        return self(mel)

    @classmethod
    def from_vocos_folder(cls, path: str | os.PathLike[str]) -> Vocos:
        """Load an official Vocos folder (``config.yaml`` + ``pytorch_model.bin``) unchanged, strictly.

        Raises ``FileNotFoundError`` if a file is missing and :class:`VocoderCheckpointError` for a config
        that is not a mel Vocos or weights that do not match it (listing the offending keys).
        """
        folder = Path(path)
        config_file, weights_file = folder / VOCOS_CONFIG_FILE, folder / VOCOS_WEIGHTS_FILE
        for file in (config_file, weights_file):
            if not file.is_file():
                raise FileNotFoundError(
                    f"{file} not found; a Vocos folder needs {VOCOS_CONFIG_FILE} and {VOCOS_WEIGHTS_FILE} "
                    "(e.g. a download of charactr/vocos-mel-24khz)"
                )
        model = cls(**vocos_config_from_yaml(config_file))
        state_dict = _read_state_dict(weights_file)
        skipped = [key for key in _ANALYSIS_ONLY_KEYS if state_dict.pop(key, None) is not None]
        logger.debug("%s: skipped analysis-only keys %s", weights_file, skipped)
        load_state_dict_strict(model, state_dict, source=str(weights_file))
        return model.eval()


def vocos_config_from_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Translate an official Vocos ``config.yaml`` into :class:`Vocos` keyword arguments, validating it."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise VocoderCheckpointError(f"{path}: not valid YAML ({error})") from error
    if not isinstance(raw, dict) or not {"feature_extractor", "backbone", "head"} <= raw.keys():
        raise VocoderCheckpointError(
            f"{path}: expected a Vocos config with feature_extractor, backbone and head"
        )
    features = _section(path, raw, "feature_extractor", _FEATURE_CLASS, _FEATURE_ARGS)
    backbone = _section(path, raw, "backbone", _BACKBONE_CLASS, _BACKBONE_ARGS)
    head = _section(path, raw, "head", _HEAD_CLASS, _HEAD_ARGS)
    if backbone["adanorm_num_embeddings"] is not None:
        raise VocoderCheckpointError(
            f"{path}: backbone.adanorm_num_embeddings={backbone['adanorm_num_embeddings']} (the EnCodec Vocos); "
            "only the mel Vocos (e.g. charactr/vocos-mel-24khz) is supported"
        )
    checks = {
        "backbone.input_channels == feature_extractor.n_mels": backbone["input_channels"]
        == features["n_mels"],
        "head.dim == backbone.dim": head["dim"] == backbone["dim"],
        "head.hop_length == feature_extractor.hop_length": head["hop_length"] == features["hop_length"],
        "head.padding in (center, same)": head["padding"] in ("center", "same"),
    }
    failed = [name for name, ok in checks.items() if not ok]
    if failed:
        raise VocoderCheckpointError(f"{path}: inconsistent Vocos config, these must hold: {failed}")
    return {
        "n_mels": int(backbone["input_channels"]),
        "dim": int(backbone["dim"]),
        "intermediate_dim": int(backbone["intermediate_dim"]),
        "num_layers": int(backbone["num_layers"]),
        "layer_scale_init_value": backbone["layer_scale_init_value"],
        "n_fft": int(head["n_fft"]),
        "hop_length": int(head["hop_length"]),
        "padding": head["padding"],
        "sample_rate": int(features["sample_rate"]),
    }


def _section(path: Path, raw: dict, name: str, class_path: str, defaults: dict[str, Any]) -> dict[str, Any]:
    section = raw[name]
    if not isinstance(section, dict) or section.get("class_path") != class_path:
        found = section.get("class_path") if isinstance(section, dict) else section
        raise VocoderCheckpointError(
            f"{path}: {name}.class_path is {found!r}, expected {class_path!r}; only the mel Vocos "
            "(e.g. charactr/vocos-mel-24khz) is supported"
        )
    args = section.get("init_args") or {}
    unknown = sorted(set(args) - set(defaults))
    if unknown:
        raise VocoderCheckpointError(f"{path}: unsupported {name}.init_args {unknown}")
    merged = {**defaults, **args}
    missing = sorted(key for key, value in merged.items() if value is None and key in _REQUIRED_ARGS)
    if missing:
        raise VocoderCheckpointError(f"{path}: {name}.init_args lacks required {missing}")
    return merged


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - truncated zip, bad pickle, unsafe object: all "unreadable"
        raise VocoderCheckpointError(
            f"{path}: cannot read the weights ({type(error).__name__}: {error}); the file may be truncated or "
            "not a PyTorch state dict, download it again"
        ) from error
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise VocoderCheckpointError(
            f"{path}: expected a flat dict of tensors (a state dict), got {type(state_dict)}"
        )
    return dict(state_dict)


def load_state_dict_strict(model: nn.Module, state_dict: dict[str, torch.Tensor], *, source: str) -> None:
    """Load ``state_dict`` into ``model``, raising one error that lists every missing, unexpected and
    mis-shaped key (``load_state_dict`` alone stops at shape mismatches with a less complete message)."""
    problems = state_dict_problems(model.state_dict(), state_dict, limit=12)
    if problems:
        raise VocoderCheckpointError(
            f"{source} does not match the model config: "
            + "; ".join(problems)
            + ". Check that the config and weights come from the same Vocos release."
        )
    model.load_state_dict(state_dict, strict=True)


@functools.cache
def _inverse_filterbank() -> torch.Tensor:
    # mel = fb^T @ linear, so linear ≈ pinv(fb^T) @ mel (the least-norm solution), shape [513, 100].
    return torch.linalg.pinv(mel_filterbank().double().T).float()


class GriffinLimVocoder(nn.Module):
    """Weight-free fallback vocoder for F5-TTS log-mels ``[B, 100, frames]`` → ``[B, (frames - 1) · 256]``.

    Linear magnitudes are recovered with the pseudo-inverse of the mel filterbank (negative values
    clipped to 0); phases come from ``n_iter`` iterations of fast Griffin-Lim (momentum 0.99) started
    from random phases drawn from a generator seeded with ``seed``, so output is deterministic.
    """

    def __init__(self, n_iter: int = 32, momentum: float = 0.99, seed: int = 0) -> None:
        super().__init__()
        if n_iter < 1:
            raise ValueError(f"GriffinLimVocoder: n_iter must be >= 1, got {n_iter}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"GriffinLimVocoder: momentum must be in [0, 1), got {momentum}")
        self.n_iter = n_iter
        self.momentum = momentum
        self.seed = seed
        self.sample_rate = SAMPLE_RATE
        self.register_buffer("window", torch.hann_window(WIN_LENGTH), persistent=False)
        self.register_buffer("inverse_filterbank", _inverse_filterbank().clone(), persistent=False)

    def linear_magnitude(self, mel: torch.Tensor) -> torch.Tensor:
        """Log-mel ``[B, 100, T]`` → non-negative linear STFT magnitude ``[B, 513, T]``."""
        return torch.clamp(torch.matmul(self.inverse_filterbank, torch.exp(mel.float())), min=0.0)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        if mel.ndim == 2:
            mel = mel[None]
        if mel.ndim != 3 or mel.shape[1] != N_MELS:
            raise ValueError(
                f"GriffinLimVocoder: expected log-mel [B, {N_MELS}, frames], got {tuple(mel.shape)}"
            )
        magnitude = self.linear_magnitude(mel)
        length = (mel.shape[-1] - 1) * HOP_LENGTH
        generator = torch.Generator(device="cpu").manual_seed(self.seed)
        phase = torch.rand(magnitude.shape, generator=generator).to(magnitude.device) * (2 * math.pi)
        angles = torch.polar(torch.ones_like(magnitude), phase)
        previous = torch.zeros_like(angles)
        blend = self.momentum / (1.0 + self.momentum)
        for _ in range(self.n_iter):
            rebuilt = self._stft(self._istft(magnitude * angles, length))
            angles = rebuilt - previous * blend
            angles = angles / (angles.abs() + 1e-16)
            previous = rebuilt
        return self._istft(magnitude * angles, length)

    def decode(self, mel: torch.Tensor) -> torch.Tensor:
        return self(mel)

    def _stft(self, wave: torch.Tensor) -> torch.Tensor:
        return torch.stft(wave, N_FFT, HOP_LENGTH, WIN_LENGTH, self.window, center=True, return_complex=True)

    def _istft(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        return torch.istft(spec, N_FFT, HOP_LENGTH, WIN_LENGTH, self.window, center=True, length=length)


def load_vocoder(path: str | os.PathLike[str] | None) -> Vocos | GriffinLimVocoder:
    """The vocoder for F5-TTS mels: Vocos from ``path``, or Griffin-Lim (with a warning) when ``path`` is None.

    ``path`` may be an official Vocos folder (``config.yaml`` + ``pytorch_model.bin``) or a folder written
    by ``Vocos.save_pretrained`` (``config.json`` + diffusers weights).
    """
    if path is None:
        logger.warning(
            "no vocoder weights given: using the Griffin-Lim fallback, which sounds clearly worse than Vocos; "
            "pass a charactr/vocos-mel-24khz folder for real output"
        )
        return GriffinLimVocoder().eval()
    folder = Path(path)
    if (folder / VOCOS_CONFIG_FILE).is_file():
        return Vocos.from_vocos_folder(folder)
    if (folder / Vocos.config_name).is_file():
        return Vocos.from_pretrained(folder).eval()
    raise FileNotFoundError(
        f"no vocoder found in {folder}: expected {VOCOS_CONFIG_FILE} + {VOCOS_WEIGHTS_FILE} (official Vocos) "
        f"or {Vocos.config_name} (saved with Vocos.save_pretrained)"
    )
