"""Text-to-speech with an F5-TTS model run by mmflow: reference clip + its transcript + new text → speech.

The pipeline is F5-TTS's inference (``f5_tts.infer.utils_infer``), with the sampling done by the core sampler
``mmflow.flow.generate``: the reference mel is the given context of the audio stream, the text (reference
transcript + new text) goes to the backbone as token ids, and the flow fills in the rest.

1. The reference transcript is made to end in ". " (or "。"), as F5-TTS does.
2. Long text is split at punctuation into chunks that fit the model's ~22 s window next to the reference.
3. Each chunk gets F5-TTS's duration estimate (reference frames scaled by the UTF-8 byte ratio of the texts).
4. All chunks (of all texts) are sampled in padded batches: 32 Euler steps, sway −1, CFG 2 batched.
5. The generated mel (after the reference) is vocoded, its loudness restored, and chunks cross-faded (0.15 s).

Noise is drawn per chunk from a generator seeded with ``seed + chunk index``, so a text gives the same speech
whether it is synthesised alone or in a batch (exactly so when the model masks padding).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from mmflow import Guidance, MMDiT, StreamBatch, generate

from .audio_io import ReferenceAudio, load_reference_audio, restore_rms
from .backbone import TEXT_KEY
from .checkpoint import STREAM, from_f5tts
from .mel import N_MELS, SAMPLE_RATE, MelSpectrogram
from .text import PAD_ID, OnUnknown, TokenizerMode, Vocab, filler_frames, prompt_text, reference_frames
from .vocoder import load_vocoder

logger = logging.getLogger(__name__)

CONTEXT_SECONDS = 22.0
"""F5-TTS sizes text chunks so that reference + chunk last about this long."""
CROSS_FADE_SECONDS = 0.15
# Split after ; : , . ! ? followed by whitespace, or right after CJK sentence punctuation (F5-TTS's rule).
_SENTENCE_END = re.compile(r"(?<=[;:,.!?])\s+|(?<=[；：，。！？])")


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))


def finish_reference_text(ref_text: str) -> str:
    """End the reference transcript with ". " (or "。") as F5-TTS does, so the new text starts a sentence."""
    if not ref_text or not ref_text.strip():
        raise ValueError("ref_text is empty; give the transcript of the reference audio")
    if ref_text.endswith(". ") or ref_text.endswith("。"):
        return ref_text
    return ref_text + (" " if ref_text.endswith(".") else ". ")


def chunk_bytes(ref_text: str, ref_seconds: float, window_seconds: float, speed: float = 1.0) -> int:
    """UTF-8 bytes of new text that fit one window next to the reference, at the reference's speaking rate
    (F5-TTS's chunk size; at least a second's worth when the reference fills the window)."""
    return int(_utf8_len(ref_text) / ref_seconds * max(window_seconds - ref_seconds, 1.0) * speed)


def chunk_text(text: str, max_bytes: int) -> list[str]:
    """Split ``text`` at sentence punctuation and pack the pieces greedily into chunks of ≤ ``max_bytes`` UTF-8
    bytes (a single piece longer than that stays whole). Pieces ending in a one-byte character get a space."""
    chunks, current = [], ""
    for piece in _SENTENCE_END.split(text):
        if not piece:
            continue
        joined = piece + " " if _utf8_len(piece[-1]) == 1 else piece
        if _utf8_len(current) + _utf8_len(piece) <= max_bytes:
            current += joined
        else:
            if current:
                chunks.append(current.strip())
            current = joined
    if current:
        chunks.append(current.strip())
    return chunks


def cross_fade(waves: Sequence[np.ndarray], seconds: float = CROSS_FADE_SECONDS, rate: int = SAMPLE_RATE):
    """Join waveforms with linear cross-fades of ``seconds`` (shortened to fit short pieces; 0: concatenate)."""
    out = waves[0]
    for wave in waves[1:]:
        overlap = min(int(seconds * rate), len(out), len(wave))
        if overlap <= 0:
            out = np.concatenate([out, wave])
            continue
        fade = np.linspace(0.0, 1.0, overlap)
        mixed = out[-overlap:] * fade[::-1] + wave[:overlap] * fade
        out = np.concatenate([out[:-overlap], mixed, wave[overlap:]])
    return out.astype(np.float32)


@dataclass
class Synthesis:
    """One synthesised text: mono float32 ``waveform`` at ``sample_rate`` and the chunks it was made from."""

    waveform: np.ndarray
    sample_rate: int
    chunks: list[str]
    mels: list[torch.Tensor] = field(repr=False)  # per chunk (frames, 100): the generated part

    @property
    def seconds(self) -> float:
        return self.waveform.shape[-1] / self.sample_rate


@dataclass
class _Request:
    """One chunk to sample: where it belongs, its token ids and its total length in frames."""

    text_index: int
    chunk_index: int
    text: str
    ids: list[int]
    frames: int


class F5TTSSynthesizer:
    """Zero-shot TTS with an F5-TTS ``MMDiT`` (see :func:`~mmflow_audio_f5tts.checkpoint.from_f5tts`).

    Args:
        model: An MMDiT with an F5-TTS ``audio`` stream.
        vocab: The checkpoint's vocabulary.
        vocoder: Mel → waveform (``Vocos`` or ``GriffinLimVocoder``); None loads the Griffin-Lim fallback.
        steps, cfg_strength, sway, method: Sampler settings (F5-TTS: 32 Euler steps, CFG 2, sway −1).
        tokenizer: ``"pinyin"`` (released Base models) or ``"char"``.
        on_unknown: What to do with characters the vocabulary lacks (``"error"`` or F5's ``"space"``).
        cross_fade_seconds: Overlap of consecutive chunks.
        batch_size: Chunks sampled together. None: all at once when the model masks padding, else one at a
            time (with F5-TTS's unmasked attention, padding changes the result, as in F5-TTS itself).
    """

    def __init__(
        self,
        model: MMDiT,
        vocab: Vocab,
        vocoder: nn.Module | None = None,
        *,
        steps: int = 32,
        cfg_strength: float = 2.0,
        sway: float = -1.0,
        method: str = "euler",
        tokenizer: TokenizerMode = "pinyin",
        on_unknown: OnUnknown = "error",
        cross_fade_seconds: float = CROSS_FADE_SECONDS,
        batch_size: int | None = None,
    ):
        if STREAM not in model.specs:
            raise ValueError(
                f"the model has no {STREAM!r} stream (streams: {model.stream_names}); load it with from_f5tts"
            )
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be None or >= 1, got {batch_size}")
        if cross_fade_seconds < 0:
            raise ValueError(f"cross_fade_seconds must be >= 0, got {cross_fade_seconds}")
        self.model, self.vocab = model.eval(), vocab
        self.vocoder = (load_vocoder(None) if vocoder is None else vocoder).eval()
        self.steps, self.cfg_strength, self.sway, self.method = steps, cfg_strength, sway, method
        self.tokenizer, self.on_unknown = tokenizer, on_unknown
        self.cross_fade_seconds = cross_fade_seconds
        self.batch_size = batch_size if batch_size is not None else (None if model.config.mask_padding else 1)
        self.mel = MelSpectrogram()

    @classmethod
    def from_pretrained(
        cls,
        checkpoint_path: str | os.PathLike[str],
        vocab_path_or_folder: str | os.PathLike[str],
        vocoder_path: str | os.PathLike[str] | None = None,
        *,
        config: str | dict = "F5TTS_v1_Base",
        mask_padding: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        **kwargs,
    ) -> F5TTSSynthesizer:
        """Official checkpoint + ``vocab.txt`` + Vocos folder (None: Griffin-Lim) → a synthesizer."""
        model, vocab = from_f5tts(
            checkpoint_path,
            vocab_path_or_folder,
            config,
            mask_padding=mask_padding,
            device=device,
            dtype=dtype,
        )
        vocoder = load_vocoder(vocoder_path)
        if device is not None:
            vocoder = vocoder.to(device)
        return cls(model, vocab, vocoder, **kwargs)

    # ---------------------------------------------------------------------------------------------- public

    def synthesize(
        self,
        ref_audio: str | os.PathLike[str] | ReferenceAudio,
        ref_text: str,
        gen_text: str | Sequence[str],
        *,
        speed: float = 1.0,
        seed: int = 0,
        progress: bool = True,
    ) -> Synthesis | list[Synthesis]:
        """Speak ``gen_text`` (one text, or a list of texts sampled together) in the voice of ``ref_audio``.

        Args:
            ref_audio: Reference clip path (conditioned like F5-TTS: ≤ 12 s, mono, RMS ≥ 0.1, 24 kHz) or a
                ``ReferenceAudio`` from ``load_reference_audio``.
            ref_text: Its transcript.
            gen_text: Text to speak; a list returns a list of results in the same order.
            speed: Speaking rate factor for the duration estimate (> 0).
            seed: Noise seed; chunk k of every text uses ``seed + k``.
            progress: Show sampling progress bars.
        """
        single = isinstance(gen_text, str)
        texts = [gen_text] if single else list(gen_text)
        if not texts:
            raise ValueError("gen_text is an empty list; give at least one text to speak")
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"gen_text[{i}] is empty ({text!r}); give text to speak")
        if not speed > 0:
            raise ValueError(f"speed must be positive, got {speed}")
        reference = ref_audio if isinstance(ref_audio, ReferenceAudio) else load_reference_audio(ref_audio)
        if reference.sample_rate != SAMPLE_RATE:
            raise ValueError(f"reference audio must be at {SAMPLE_RATE} Hz, got {reference.sample_rate} Hz")
        if reference.seconds >= CONTEXT_SECONDS:
            raise ValueError(
                f"reference audio is {reference.seconds:.1f} s; it must be shorter than {CONTEXT_SECONDS:.0f} s "
                f"(F5-TTS uses at most 12 s), clip it"
            )
        ref_text = finish_reference_text(ref_text)
        requests = self._plan(reference, ref_text, texts, speed)
        mels = self._sample(reference, requests, seed, progress)
        results = self._finish(reference, texts, requests, mels)
        return results[0] if single else results

    __call__ = synthesize

    # ---------------------------------------------------------------------------------------------- steps

    def _plan(
        self, reference: ReferenceAudio, ref_text: str, texts: list[str], speed: float
    ) -> list[_Request]:
        """Chunks of every text with their token ids and total frames (reference included)."""
        max_bytes = chunk_bytes(ref_text, reference.seconds, CONTEXT_SECONDS, speed)
        samples = reference.waveform.shape[-1]
        cond_frames = reference_frames(samples) + 1  # centred STFT frames of the reference
        requests = []
        for i, text in enumerate(texts):
            for k, chunk in enumerate(chunk_text(text, max_bytes)):
                tokens = self.vocab.tokenize(prompt_text(ref_text, chunk), mode=self.tokenizer)
                ids = self.vocab.encode(tokens, on_unknown=self.on_unknown)
                frames = cond_frames + filler_frames(samples, ref_text, chunk, len(ids), speed)
                requests.append(_Request(i, k, chunk, ids, frames))
        logger.info(
            "%d text(s) → %d chunk(s), %d frames in all",
            len(texts),
            len(requests),
            sum(r.frames for r in requests),
        )
        return requests

    @torch.no_grad()
    def _sample(self, reference: ReferenceAudio, requests: list[_Request], seed: int, progress: bool) -> list:
        """Generated mel ``(frames, 100)`` per request, after the reference (one reference frame kept, as F5)."""
        parameter = next(self.model.parameters())
        device, dtype = parameter.device, parameter.dtype
        cond = self.mel.time_major(torch.from_numpy(reference.waveform))[0].to(device, dtype)  # (f, 100)
        ref_frames = reference_frames(reference.waveform.shape[-1])
        size = self.batch_size or len(requests)
        order = sorted(
            range(len(requests)), key=lambda j: requests[j].frames
        )  # similar lengths share a batch
        guidance = Guidance(scales={STREAM: self.cfg_strength}) if self.cfg_strength else None
        mels: list = [None] * len(requests)
        for start in range(0, len(order), size):
            group = [requests[j] for j in order[start : start + size]]
            batch, noise = self._batch(group, cond, seed, device, dtype)
            out = generate(
                self.model,
                {STREAM: batch},
                steps=self.steps,
                sway=self.sway,
                method=self.method,
                guidance=guidance,
                noise={STREAM: noise},
                progress=progress,
            )[STREAM]
            for row, j in enumerate(order[start : start + size]):
                mels[j] = out[row, ref_frames : requests[j].frames].float()
        return mels

    def _batch(self, group: list[_Request], cond: torch.Tensor, seed: int, device, dtype):
        """The padded ``StreamBatch`` of a group of requests and its per-sample noise."""
        frames = [r.frames for r in group]
        b, n = len(group), max(frames)
        latent = torch.zeros(b, n, N_MELS, device=device, dtype=dtype)
        latent[:, : cond.shape[0]] = cond
        given = torch.zeros(b, n, dtype=torch.bool, device=device)
        given[:, : cond.shape[0]] = True
        text = torch.full((b, max(len(r.ids) for r in group)), PAD_ID, dtype=torch.long)
        for row, request in enumerate(group):
            text[row, : len(request.ids)] = torch.tensor(request.ids, dtype=torch.long)
        text = text.to(device)
        batch = StreamBatch.from_lengths(latent, frames, given=given, extras={TEXT_KEY: text})
        noise = torch.zeros(b, n, N_MELS)
        for row, request in enumerate(group):
            generator = torch.Generator().manual_seed(seed + request.chunk_index)
            noise[row, : request.frames] = torch.randn(request.frames, N_MELS, generator=generator)
        return batch, noise.to(device, dtype)

    @torch.no_grad()
    def _finish(self, reference, texts, requests, mels) -> list[Synthesis]:
        """Vocode every chunk, restore the reference loudness and cross-fade the chunks of each text."""
        results = []
        for i in range(len(texts)):
            mine = [(r, mel) for r, mel in zip(requests, mels, strict=True) if r.text_index == i]
            waves = []
            vocoder_device = next(iter(self.vocoder.state_dict(keep_vars=True).values()), mine[0][1]).device
            for _, mel in mine:
                wave = self.vocoder.decode(mel.T[None].to(vocoder_device))[0].float().cpu().numpy()
                waves.append(restore_rms(wave, reference.original_rms))
            results.append(
                Synthesis(
                    waveform=cross_fade(waves, self.cross_fade_seconds),
                    sample_rate=SAMPLE_RATE,
                    chunks=[r.text for r, _ in mine],
                    mels=[mel.cpu() for _, mel in mine],
                )
            )
        return results
