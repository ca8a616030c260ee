"""Reading, conditioning and writing audio for the F5-TTS speech stream.

Everything the model touches is mono float32 at 24 kHz. Reference (prompt) audio is conditioned the way
F5-TTS inference does it: long references are clipped (F5-TTS keeps at most 12 s), the channels are
averaged, quiet audio is raised to RMS 0.1 (loud audio is left alone), then it is resampled. The RMS
factor is kept so generated speech can be returned at the reference's original loudness.

Files are read with soundfile (wav, flac, ogg, mp3) and, for containers libsndfile cannot open
(m4a, mp4, webm, ...), decoded with PyAV. Resampling uses soxr.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmflow.io import atomic_path, check_replaceable_file

from .mel import SAMPLE_RATE

logger = logging.getLogger(__name__)

TARGET_RMS = 0.1
"""F5-TTS raises the RMS of quieter references to this value (``target_rms`` in its inference code)."""
MAX_REFERENCE_SECONDS = 12.0
"""F5-TTS clips references to at most 12 s; longer prompts leave little room in its context window."""
MIN_REFERENCE_SECONDS = 1.0
"""Shorter references give the duration estimate and the voice prompt too little to work with."""
SILENCE_PEAK = 1e-4
"""Audio whose absolute peak stays below this (about -80 dBFS) is treated as silent."""

_CONVERT_HINT = "convert it to WAV, e.g. `ffmpeg -i INPUT -ac 1 -ar 24000 OUTPUT.wav`"


class AudioInputError(ValueError):
    """An audio input that cannot be used: unreadable, empty, silent or too short. The message names the file."""


@dataclass(frozen=True)
class ReferenceAudio:
    """A conditioned reference clip.

    Attributes:
        waveform: mono float32 samples at ``sample_rate``, RMS-normalised.
        sample_rate: sample rate of ``waveform`` in Hz.
        original_rms: RMS before normalisation; pass it to :func:`restore_rms` for the generated audio.
        source: where the audio came from (for messages).
    """

    waveform: np.ndarray
    sample_rate: int
    original_rms: float
    source: str

    @property
    def seconds(self) -> float:
        return self.waveform.shape[-1] / self.sample_rate


def read_audio(path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    """Decode a file to float32 ``[channels, samples]`` in [-1, 1] and its sample rate, without conversion.

    Tries soundfile first and PyAV second. Raises ``FileNotFoundError`` for a missing path and
    :class:`AudioInputError` for anything that is not decodable audio or has no samples.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"audio file not found: {path}")
    if path.is_dir():
        raise AudioInputError(f"{path}: is a directory, expected an audio file (wav, flac, mp3, m4a, mp4)")
    try:
        audio, rate = _read_with_soundfile(path)
    except RuntimeError as sf_error:  # soundfile.LibsndfileError: format not recognised, corrupt data
        try:
            audio, rate = _read_with_pyav(path)
        except AudioInputError:
            raise
        except Exception as av_error:  # noqa: BLE001 - PyAV raises many error types; all mean "unreadable"
            raise AudioInputError(
                f"{path}: not a readable audio file (soundfile: {sf_error}; PyAV: {av_error}). If it is audio, "
                f"{_CONVERT_HINT}"
            ) from av_error
        logger.debug("read %s with PyAV (soundfile could not open it: %s)", path, sf_error)
    if audio.shape[-1] == 0:
        raise AudioInputError(f"{path}: contains no audio samples; use a file with audible speech")
    if not np.isfinite(audio).all():
        raise AudioInputError(f"{path}: contains NaN or infinite samples; re-export the audio")
    return audio, rate


def _read_with_soundfile(path: Path) -> tuple[np.ndarray, int]:
    import soundfile

    data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    return np.ascontiguousarray(data.T), int(rate)


def _read_with_pyav(path: Path) -> tuple[np.ndarray, int]:
    import av

    with av.open(str(path)) as container:
        if not container.streams.audio:
            raise AudioInputError(
                f"{path}: the container has no audio stream (video only?); give a file that contains speech"
            )
        stream = container.streams.audio[0]
        rate = int(stream.codec_context.sample_rate)
        # Convert every decoded frame to planar float32 at the stream's own rate and layout.
        converter = av.AudioResampler(format="fltp", layout=stream.codec_context.layout, rate=rate)
        chunks = []
        for frame in container.decode(stream):
            chunks.extend(out.to_ndarray() for out in converter.resample(frame))
        chunks.extend(out.to_ndarray() for out in converter.resample(None))
    if not chunks:
        return np.zeros((1, 0), dtype=np.float32), rate
    return np.concatenate(chunks, axis=1).astype(np.float32, copy=False), rate


def to_mono(audio: np.ndarray) -> np.ndarray:
    """Average the channels of ``[channels, samples]`` audio; ``[samples]`` is returned unchanged."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        return audio
    if audio.ndim != 2:
        raise ValueError(f"to_mono: expected [samples] or [channels, samples], got shape {audio.shape}")
    return audio.mean(axis=0, dtype=np.float64).astype(np.float32)


RESAMPLERS = ("soxr", "f5")
"""``soxr``: band-limited, linear phase (the default); ``f5``: F5-TTS's own (torchaudio's windowed sinc)."""


def sinc_resample(audio: np.ndarray, orig_rate: int, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Resample as F5-TTS's inference does (``torchaudio.transforms.Resample`` defaults: a Hann-windowed sinc of
    6 zero crossings, roll-off 0.99, the kernel computed in float64 and applied in float32).

    Unlike soxr it leaves images above the source's Nyquist frequency (e.g. above 8 kHz for a 16 kHz clip): what an
    official F5-TTS checkpoint's references looked like in F5-TTS's own inference.
    """
    import math

    import torch

    if orig_rate == target_rate:
        return np.asarray(audio, np.float32)
    gcd = math.gcd(int(orig_rate), int(target_rate))
    orig, new = int(orig_rate) // gcd, int(target_rate) // gcd
    zeros, rolloff = 6, 0.99
    cutoff = min(orig, new) * rolloff
    width = math.ceil(zeros * orig / cutoff)
    offsets = torch.arange(-width, width + orig, dtype=torch.float64)[None, None] / orig
    t = (torch.arange(0, -new, -1)[:, None, None] / new + offsets) * cutoff
    t = t.clamp(-zeros, zeros)
    window = torch.cos(t * math.pi / zeros / 2) ** 2
    t = t * math.pi
    kernel = torch.where(t == 0, torch.ones((), dtype=t.dtype), t.sin() / t) * window * (cutoff / orig)
    wave = torch.as_tensor(np.asarray(audio, np.float32))[None, None]
    length = wave.shape[-1]
    padded = torch.nn.functional.pad(wave, (width, width + orig))
    out = torch.nn.functional.conv1d(padded, kernel.float(), stride=orig).transpose(1, 2).reshape(-1)
    return out[: math.ceil(new * length / orig)].numpy()


def resample(
    audio: np.ndarray, orig_rate: int, target_rate: int = SAMPLE_RATE, *, quality: str = "HQ"
) -> np.ndarray:
    """Resample mono ``[samples]`` audio with soxr (band-limited, linear phase). No-op if the rates match."""
    import soxr

    if orig_rate <= 0 or target_rate <= 0:
        raise ValueError(f"resample: sample rates must be positive, got {orig_rate} -> {target_rate}")
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(
            f"resample: expected mono [samples] audio, got shape {audio.shape}; call to_mono first"
        )
    if orig_rate == target_rate:
        return audio
    return soxr.resample(audio, orig_rate, target_rate, quality=quality).astype(np.float32, copy=False)


def rms(audio: np.ndarray) -> float:
    """Root mean square over all samples (computed in float64)."""
    audio = np.asarray(audio)
    return float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))


def normalize_rms(audio: np.ndarray, target_rms: float = TARGET_RMS) -> tuple[np.ndarray, float]:
    """Raise quiet audio to ``target_rms`` the way F5-TTS inference does; louder audio is left unchanged.

    Returns ``(audio, original_rms)``. Silent audio (RMS 0) cannot be normalised and raises ``ValueError``.
    """
    original = rms(audio)
    if original == 0.0:
        raise ValueError("normalize_rms: the audio is all zeros; there is nothing to normalise")
    if original < target_rms:
        audio = (np.asarray(audio, dtype=np.float32) * np.float32(target_rms / original)).astype(np.float32)
    return np.asarray(audio, dtype=np.float32), original


def restore_rms(audio: np.ndarray, original_rms: float, target_rms: float = TARGET_RMS) -> np.ndarray:
    """Undo :func:`normalize_rms` on generated audio: scale by ``original_rms / target_rms`` if it was raised."""
    if original_rms < target_rms:
        return (np.asarray(audio, dtype=np.float32) * np.float32(original_rms / target_rms)).astype(
            np.float32
        )
    return np.asarray(audio, dtype=np.float32)


def clip_reference(
    audio: np.ndarray,
    sample_rate: int,
    max_seconds: float = MAX_REFERENCE_SECONDS,
    *,
    source: str = "reference audio",
) -> np.ndarray:
    """Shorten mono audio longer than ``max_seconds``, preferring to cut inside a pause.

    Looks for the latest pause (>= 100 ms below -40 dBFS, in 10 ms steps) whose middle lies in the second
    half of the allowed span and cuts there, so no word is split; without one it cuts hard at
    ``max_seconds``. Logs a warning either way, since the caller's reference text may now be too long.
    """
    limit = int(round(max_seconds * sample_rate))
    if audio.shape[-1] <= limit:
        return audio
    cut = _pause_cut_point(audio[:limit], sample_rate)
    how = "in a pause" if cut is not None else "hard (no pause found)"
    cut = limit if cut is None else cut
    logger.warning(
        "%s is %.2f s long; clipped %s to %.2f s (F5-TTS uses at most %.0f s). Make sure the reference text "
        "matches only the kept audio, or give a shorter clip.",
        source,
        audio.shape[-1] / sample_rate,
        how,
        cut / sample_rate,
        max_seconds,
    )
    return audio[:cut]


def _pause_cut_point(audio: np.ndarray, sample_rate: int) -> int | None:
    step = max(1, sample_rate // 100)  # 10 ms
    n_steps = audio.shape[-1] // step
    if n_steps == 0:
        return None
    frames = audio[: n_steps * step].reshape(n_steps, step).astype(np.float64)
    level_db = 10.0 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    quiet = level_db < -40.0
    min_run = 10  # 100 ms
    best = None
    start = None
    for i, is_quiet in enumerate([*quiet, False]):
        if is_quiet and start is None:
            start = i
        elif not is_quiet and start is not None:
            middle = (start + i) // 2 * step
            if i - start >= min_run and middle >= audio.shape[-1] // 2:
                best = middle
            start = None
    return best


def load_audio(path: str | os.PathLike[str], sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read any supported file as mono float32 at ``sample_rate`` (no loudness change). For training data."""
    audio, rate = read_audio(path)
    return resample(to_mono(audio), rate, sample_rate)


def require_audible(audio: np.ndarray, source, what: str = "a file") -> np.ndarray:
    """Refuse silent audio (peak below :data:`SILENCE_PEAK`), naming ``source``; returns ``audio``."""
    peak = float(np.max(np.abs(audio))) if np.size(audio) else 0.0
    if peak < SILENCE_PEAK:
        raise AudioInputError(
            f"{source}: is silent (peak amplitude {peak:.2e} < {SILENCE_PEAK:.0e}); give {what} with audible speech"
        )
    return audio


def load_speech(path: str | os.PathLike[str], sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Given speech (e.g. for audio → motion): :func:`load_audio`, refusing silent files by name."""
    return require_audible(load_audio(path, sample_rate), path, "a file")


def load_reference_audio(
    path: str | os.PathLike[str],
    *,
    sample_rate: int = SAMPLE_RATE,
    target_rms: float = TARGET_RMS,
    max_seconds: float = MAX_REFERENCE_SECONDS,
    min_seconds: float = MIN_REFERENCE_SECONDS,
    resampler: str = "soxr",
) -> ReferenceAudio:
    """Read and condition a reference (prompt) clip like F5-TTS inference.

    Order as in F5-TTS: clip to ``max_seconds`` → mono → RMS-normalise (raise only) → resample (``resampler``:
    ``soxr``, or ``f5`` for F5-TTS's exact windowed-sinc resampling, :func:`sinc_resample`).
    Raises :class:`AudioInputError` naming the file if it is unreadable, empty, silent or shorter
    than ``min_seconds``.
    """
    if resampler not in RESAMPLERS:
        raise ValueError(f"resampler must be one of {RESAMPLERS}, got {resampler!r}")
    audio, rate = read_audio(path)
    mono = require_audible(to_mono(audio), path, "a reference")
    seconds = mono.shape[-1] / rate
    if seconds < min_seconds:
        raise AudioInputError(
            f"{path}: is {seconds:.2f} s long; the reference must be at least {min_seconds:.1f} s "
            f"(F5-TTS works best with 3-{MAX_REFERENCE_SECONDS:.0f} s of clean speech)"
        )
    mono = clip_reference(mono, rate, max_seconds, source=str(path))
    normalised, original_rms = normalize_rms(mono, target_rms)
    waveform = sinc_resample(normalised, rate, sample_rate) if resampler == "f5" else resample(normalised, rate,
                                                                                              sample_rate)
    return ReferenceAudio(
        waveform=waveform, sample_rate=sample_rate, original_rms=original_rms, source=str(path)
    )


def write_wav(
    path: str | os.PathLike[str],
    audio: np.ndarray,
    sample_rate: int = SAMPLE_RATE,
    *,
    subtype: str = "PCM_16",
) -> Path:
    """Write ``[samples]`` or ``[channels, samples]`` audio (numpy or torch) to a WAV file atomically.

    The data go to a temporary file in the target folder which is then renamed over ``path``, so a reader
    never sees a half-written file. Integer subtypes clip to [-1, 1] (with a warning if anything clipped).
    """
    path = Path(path)
    if hasattr(audio, "detach"):  # torch.Tensor, without importing torch here
        audio = audio.detach().float().cpu().numpy()
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim not in (1, 2) or audio.shape[-1] == 0:
        raise ValueError(
            f"write_wav({path}): expected non-empty [samples] or [channels, samples], got {audio.shape}"
        )
    if not np.isfinite(audio).all():
        raise ValueError(f"write_wav({path}): audio contains NaN or infinite samples")
    if subtype.startswith("PCM"):
        clipped = int(np.count_nonzero(np.abs(audio) > 1.0))
        if clipped:
            logger.warning("write_wav(%s): %d samples outside [-1, 1] were clipped", path, clipped)
            audio = np.clip(audio, -1.0, 1.0)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"write_wav: output folder does not exist: {path.parent}")
    import soundfile

    frames = audio.T if audio.ndim == 2 else audio
    check_replaceable_file(path)  # before encoding: a folder at ``path`` is refused, never replaced
    with atomic_path(path) as tmp:
        soundfile.write(tmp, frames, sample_rate, subtype=subtype, format="WAV")
    return path
