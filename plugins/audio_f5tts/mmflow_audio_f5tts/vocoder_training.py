"""What training a small :class:`~mmflow_audio_f5tts.vocoder.Vocos` on speech needs: losses and data.

Why: the embedded JAM-Flow model has no vocoder, and Griffin-Lim (phase from iterations, magnitudes from a
mel pseudo-inverse) caps how intelligible its speech can be. A small Vocos trained on the same espeak-ng
speech learns both the missing linear-frequency detail and a phase. On a CPU budget it is trained without a
GAN, from spectral losses alone:

* :class:`MultiResolutionSTFTLoss`: spectral convergence + log-magnitude L1 at several FFT sizes. Matching
  magnitudes at several time/frequency resolutions at once is only possible with a consistent phase, so
  this is what teaches the head its phase (a single resolution would let it produce phasey, smeared audio).
* :class:`MelLoss`: L1 between log-mels of the output and the target, with the project's own
  :class:`~mmflow_audio_f5tts.mel.MelSpectrogram`, i.e. exactly the features the vocoder decodes, so a
  vocoder with a low mel loss reproduces its input.
* :class:`SegmentSampler`: random fixed-length segments of whole utterances with the matching frames of
  the utterance's log-mel (cut from the mel of the whole utterance, as at inference, not recomputed with
  reflect padding at the segment edges). Batch ``step`` depends only on ``(seed, step)``, so a resumed run
  sees the same batches as one that never stopped.

The speech itself comes from the caller (the recipe synthesises the JAM-Flow corpus sentences with espeak-ng);
this module does not import the JAM-Flow plugin, which depends on this one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .mel import HOP_LENGTH, LOG_CLAMP, SAMPLE_RATE, MelSpectrogram

logger = logging.getLogger(__name__)

DEFAULT_FFT_SIZES = (512, 1024, 2048)


def stft_magnitude(wave: torch.Tensor, n_fft: int, hop_length: int) -> torch.Tensor:
    """``|STFT|`` of ``[B, samples]`` with a Hann window of ``n_fft`` → ``[B, n_fft/2 + 1, frames]``.

    Computed as ``sqrt(re² + im² + tiny)`` so the gradient is finite where a bin is exactly zero (espeak-ng
    silences are digital zeros).
    """
    window = torch.hann_window(n_fft, device=wave.device, dtype=wave.dtype)
    spec = torch.stft(wave, n_fft, hop_length, n_fft, window, center=True, pad_mode="reflect", return_complex=True)
    return torch.sqrt(spec.real.square() + spec.imag.square() + 1e-12)


class MultiResolutionSTFTLoss(nn.Module):
    """Spectral convergence and log-magnitude L1, each averaged over FFT sizes (hop = size / 4).

    Spectral convergence ``‖|S| − |Ŝ|‖_F / ‖|S|‖_F`` weighs the loud parts (formants); the log-magnitude L1
    (floor :data:`~mmflow_audio_f5tts.mel.LOG_CLAMP`, as the mel) weighs quiet parts and silences. Both are 0
    exactly when the magnitudes agree at every resolution.
    """

    def __init__(self, fft_sizes: Sequence[int] = DEFAULT_FFT_SIZES) -> None:
        super().__init__()
        fft_sizes = tuple(int(n) for n in fft_sizes)
        if not fft_sizes or any(n < 16 or n % 4 for n in fft_sizes):
            raise ValueError(f"MultiResolutionSTFTLoss: fft_sizes must be multiples of 4, >= 16, got {fft_sizes}")
        self.fft_sizes = fft_sizes

    def forward(self, predicted: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(spectral convergence, log-magnitude L1)`` of waveforms ``[B, samples]`` of equal length."""
        _check_pair(predicted, target)
        convergence, log_magnitude = [], []
        for n_fft in self.fft_sizes:
            mag_pred = stft_magnitude(predicted, n_fft, n_fft // 4)
            mag_true = stft_magnitude(target, n_fft, n_fft // 4)
            convergence.append(
                torch.linalg.vector_norm(mag_true - mag_pred) / torch.linalg.vector_norm(mag_true).clamp_min(1e-7)
            )
            log_magnitude.append(
                (mag_true.clamp_min(LOG_CLAMP).log() - mag_pred.clamp_min(LOG_CLAMP).log()).abs().mean()
            )
        return torch.stack(convergence).mean(), torch.stack(log_magnitude).mean()


class MelLoss(nn.Module):
    """L1 between the log-mels (:class:`MelSpectrogram`) of two waveforms: what the vocoder must reproduce."""

    def __init__(self) -> None:
        super().__init__()
        self.mel = MelSpectrogram()

    def forward(self, predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_pair(predicted, target)
        return (self.mel(predicted) - self.mel(target)).abs().mean()


@dataclass
class VocoderLossTerms:
    total: torch.Tensor
    mel: torch.Tensor
    spectral_convergence: torch.Tensor
    log_magnitude: torch.Tensor

    def as_floats(self) -> dict[str, float]:
        return {name: float(value.detach()) for name, value in vars(self).items()}


class VocoderLoss(nn.Module):
    """``mel_weight · mel L1 + sc_weight · spectral convergence + log_mag_weight · log-magnitude L1``."""

    def __init__(
        self,
        fft_sizes: Sequence[int] = DEFAULT_FFT_SIZES,
        mel_weight: float = 1.0,
        sc_weight: float = 1.0,
        log_mag_weight: float = 1.0,
    ) -> None:
        super().__init__()
        weights = {"mel_weight": mel_weight, "sc_weight": sc_weight, "log_mag_weight": log_mag_weight}
        bad = {name: value for name, value in weights.items() if not value >= 0}
        if bad or not any(weights.values()):
            raise ValueError(f"VocoderLoss: weights must be >= 0 and not all 0, got {weights}")
        self.weights = weights
        self.stft = MultiResolutionSTFTLoss(fft_sizes)
        self.mel = MelLoss()

    def forward(self, predicted: torch.Tensor, target: torch.Tensor) -> VocoderLossTerms:
        convergence, log_magnitude = self.stft(predicted, target)
        mel = self.mel(predicted, target)
        w = self.weights
        total = w["mel_weight"] * mel + w["sc_weight"] * convergence + w["log_mag_weight"] * log_magnitude
        return VocoderLossTerms(total, mel, convergence, log_magnitude)


def _check_pair(predicted: torch.Tensor, target: torch.Tensor) -> None:
    if predicted.ndim != 2 or predicted.shape != target.shape:
        raise ValueError(
            f"vocoder loss: expected two waveforms [B, samples] of the same shape, got {tuple(predicted.shape)} "
            f"and {tuple(target.shape)}"
        )


class SegmentSampler:
    """Random ``segment_frames``-frame segments of utterances: ``(wave [B, (frames−1)·256], log-mel [B, 100, frames])``.

    Each utterance's log-mel is computed once, from the whole utterance. A segment of mel frames
    ``k … k+frames−1`` pairs with samples ``k·256 … (k+frames−1)·256``: the span between the first and the
    last frame centre, which is exactly what ``Vocos(padding="center")`` returns for those frames.
    Utterances are drawn with probability proportional to their usable length. Utterances shorter than a
    segment are left out (with a warning); if none is long enough it raises.
    """

    def __init__(self, waveforms: Iterable[np.ndarray], segment_frames: int, seed: int = 0) -> None:
        if segment_frames < 2:
            raise ValueError(f"SegmentSampler: segment_frames must be >= 2, got {segment_frames}")
        self.segment_frames = int(segment_frames)
        self.seed = int(seed)
        mel = MelSpectrogram()
        self.waves: list[torch.Tensor] = []
        self.mels: list[torch.Tensor] = []
        short = 0
        with torch.no_grad():
            for wave in waveforms:
                wave = torch.as_tensor(np.asarray(wave, dtype=np.float32)).reshape(-1)
                if wave.numel() <= HOP_LENGTH * 2 or 1 + wave.numel() // HOP_LENGTH < segment_frames:
                    short += 1
                    continue
                self.waves.append(wave)
                self.mels.append(mel(wave)[0])
        if short:
            logger.warning("SegmentSampler: left out %d utterance(s) shorter than %d frames", short, segment_frames)
        if not self.waves:
            raise ValueError(f"SegmentSampler: no utterance has at least {segment_frames} mel frames")
        self.starts = torch.tensor([m.shape[-1] - segment_frames + 1 for m in self.mels], dtype=torch.float64)

    @property
    def segment_samples(self) -> int:
        return (self.segment_frames - 1) * HOP_LENGTH

    @property
    def seconds(self) -> float:
        return sum(w.numel() for w in self.waves) / SAMPLE_RATE

    def __len__(self) -> int:
        return len(self.waves)

    def batch(self, batch_size: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch number ``step``: the same for the same ``(seed, step)``, whatever came before."""
        generator = torch.Generator().manual_seed(int(np.random.SeedSequence([self.seed, step]).generate_state(1)[0]))
        picks = torch.multinomial(self.starts, batch_size, replacement=True, generator=generator)
        waves, mels = [], []
        for index in picks.tolist():
            k = int(torch.randint(int(self.starts[index]), (1,), generator=generator))
            mels.append(self.mels[index][:, k : k + self.segment_frames])
            waves.append(self.waves[index][k * HOP_LENGTH : k * HOP_LENGTH + self.segment_samples])
        return torch.stack(waves), torch.stack(mels)

    def batches(self, batch_size: int, start_step: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Endless :meth:`batch` es from ``start_step`` on (a resumed run passes the step it resumes at)."""
        step = start_step
        while True:
            yield self.batch(batch_size, step)
            step += 1


@torch.no_grad()
def resynthesis_mel_l1(vocoder: nn.Module, mel: torch.Tensor) -> float:
    """Mean |log-mel(vocoder(mel)) − mel| of one log-mel ``[100, frames]``: how well the audio carries its input.

    A listening proxy: it ignores phase artefacts the mel cannot see, but a vocoder that loses formants,
    smears onsets or fills silences scores worse.
    """
    wave = vocoder.decode(mel[None].float())[0].float()
    again = MelSpectrogram()(wave)[0]
    frames = min(again.shape[-1], mel.shape[-1])
    return float((again[:, :frames] - mel[:, :frames]).abs().mean())
