"""The F5-TTS audio stream's codec: text, reference voice and given speech in; mel, waveform and wav out.

What a task gives the audio stream (``mmflow.codecs``):

- ``generate``: ``text`` to say, an optional reference voice (``ref_audio`` + ``ref_text``, required by models
  with F5-TTS's filler-padded text) and ``speed``. The reference's mel is the stream's prompt (given); the
  length to generate is estimated from the text: espeak-ng's timing for phoneme-aligned models, F5-TTS's
  byte-ratio estimate otherwise. Long filler-text prompts are split into sentence chunks (``split``), each
  sampled after the reference, as F5-TTS does.
- ``given``: ``audio`` (speech) and optionally its transcript ``text``; the speech comes back untouched.
- ``edit``: ``audio`` to edit and ``text``, the transcript of the whole result.

Text conditioning follows the pipeline's tokenizer: one phoneme id per mel frame (``aligned``) as frame
extras, or the filler-padded ids of the reference transcript + text as a whole-sample extra.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmflow.codecs import EncodedStream, InputError, fit_frames
from mmflow.long_form import StreamTrack, common_period
from mmflow.tasks import TaskInput
from mmflow.validation import Range, check_seconds

from .audio_io import (
    RESAMPLERS,
    TARGET_RMS,
    ReferenceAudio,
    load_reference_audio,
    load_speech,
    normalize_rms,
    require_audible,
    restore_rms,
    write_wav,
)
from .backbone import TEXT_KEY
from .mel import SAMPLE_RATE, MelSpectrogram
from .text import PAD_ID, filler_frames, prompt_text
from .tts import chunk_bytes, chunk_text, finish_reference_text

SPEED = Range(0.25, 4.0)
"""Speaking-rate factors the duration estimates accept (1.0: the natural rate)."""
TARGET_LOUDNESS = Range(0.0, 1.0, open_low=True)
"""RMS a quiet reference is raised to (F5-TTS's ``target_rms``)."""


class F5AudioCodec:
    """Codec of an F5-TTS ``audio`` stream in a pipeline with a ``tokenizer`` (and optionally a ``vocoder``)."""

    def __init__(self, spec, pipeline):
        self.spec, self.pipeline = spec, pipeline
        self.mel = MelSpectrogram()

    # ------------------------------------------------------------------------------------------ declarations

    @property
    def tokenizer(self):
        tokenizer = getattr(self.pipeline, "tokenizer", None)
        if tokenizer is None:
            raise InputError("the audio stream needs the pipeline's `tokenizer` component (F5Tokenizer or "
                             "PhonemeTokenizer); build the pipeline with one")
        return tokenizer

    @property
    def aligned(self) -> bool | None:
        """True when the model's audio backbone takes one text token per mel frame (phoneme-aligned text); None
        when the codec describes the stream without a model."""
        if self.pipeline is None:
            return None
        backbone = self.pipeline.transformer.backbones[self.spec.name]
        return getattr(backbone, "text_conditioning", "filler") == "aligned"

    def inputs(self, role: str) -> tuple[TaskInput, ...]:
        audio = "a file or a 24 kHz float32 waveform"
        if role == "given":
            return (TaskInput("audio", f"given speech, {audio}", required=True),
                    TaskInput("text", "its transcript (conditions the speech stream)"))
        if role == "edit":
            return (TaskInput("audio", f"the speech to edit, {audio}", required=True),
                    TaskInput("text", "the transcript of the whole result", required=True))
        needs_reference = {True: "", False: " (this model needs one)", None: " (models with F5-TTS's filler text "
                                                                            "need one)"}[self.aligned]
        return (
            TaskInput("text", "text to say", required=True),
            TaskInput("ref_audio", f"reference voice, a 3-12 s clip{needs_reference}", required=self.aligned is False),
            TaskInput("ref_text", "transcript of ref_audio"),
            TaskInput("speed", f"speaking-rate factor, {SPEED.describe()} (default 1.0)"),
            TaskInput("target_rms", f"loudness the reference is raised to when quieter, {TARGET_LOUDNESS.describe()} "
                      f"(default {TARGET_RMS}, F5-TTS's target_rms); the output gets the reference's loudness back"),
            TaskInput("resampler", f"how a reference at another rate is resampled: one of {RESAMPLERS} (default soxr; "
                      f"f5: F5-TTS's exact windowed sinc)"),
        )

    # ------------------------------------------------------------------------------------------ encode

    def encode(self, inputs: Mapping[str, Any], role: str, seed: int = 0) -> EncodedStream:
        text = inputs.get("text")
        if text is not None and (not isinstance(text, str) or not text.strip()):
            raise InputError(f"text is empty ({text!r}); give the text to say")
        if role in ("given", "edit"):
            encoded = self._encode_speech(inputs["audio"], text)
            encoded.state["role"] = role
            return encoded
        speed = SPEED.check("speed (--speed)", inputs.get("speed", 1.0), "1.0 is the natural speaking rate")
        target = TARGET_LOUDNESS.check("target_rms (--target-rms)", inputs.get("target_rms", TARGET_RMS),
                                       f"{TARGET_RMS} is F5-TTS's default")
        resampler = inputs.get("resampler", "soxr")
        if resampler not in RESAMPLERS:
            raise InputError(f"resampler must be one of {RESAMPLERS}, got {resampler!r}")
        reference, ref_text = self._reference(inputs.get("ref_audio"), inputs.get("ref_text"), target, resampler)
        state = {"text": text, "ref_text": ref_text, "reference": reference, "speed": speed, "target_rms": target}
        prompt = None
        if reference is not None:
            prompt = self.mel.time_major(torch.from_numpy(reference.waveform))[0]
        encoded = EncodedStream(prompt=prompt, state=state)
        encoded.estimate = self._estimate(encoded, text)
        return encoded

    def _reference(self, ref_audio, ref_text, target_rms: float, resampler: str) -> tuple[ReferenceAudio | None,
                                                                                        str | None]:
        if ref_audio is None:
            if not self.aligned:
                raise InputError("this model conditions on F5-TTS filler-padded text and needs a reference voice: "
                                 "pass ref_audio= (a 3-12 s clip) and ref_text= (its transcript)")
            if ref_text:
                raise InputError("ref_text was given without ref_audio; pass the reference clip too, or neither")
            return None, None
        if not ref_text or not str(ref_text).strip():
            raise InputError("ref_audio was given without ref_text; give the transcript of the reference")
        reference = ref_audio if isinstance(ref_audio, ReferenceAudio) else load_reference_audio(
            ref_audio, target_rms=target_rms, resampler=resampler)
        return reference, finish_reference_text(ref_text)

    def _encode_speech(self, audio, text) -> EncodedStream:
        if isinstance(audio, np.ndarray):
            source, wave = "audio", require_audible(audio, "audio")
        else:
            source, wave = os.fspath(audio), load_speech(audio)
        check_seconds(len(wave) / SAMPLE_RATE, f"audio {source}")
        wave, rms = normalize_rms(np.asarray(wave, np.float32))
        content = self.mel.time_major(torch.from_numpy(wave))[0]
        return EncodedStream(content=content, state={"text": text, "audio": wave, "audio_rms": rms})

    def _estimate(self, encoded: EncodedStream, text: str) -> int:
        """Mel frames to generate after the reference for ``text``."""
        state = encoded.state
        if self.aligned:
            frames = len(self.tokenizer.frame_ids(text, speed=state["speed"]))
        else:
            reference = state["reference"]
            ids = len(self.tokenizer.encode_text(prompt_text(state["ref_text"], text)))
            frames = filler_frames(reference.waveform.shape[-1], state["ref_text"], text, ids, state["speed"])
        check_seconds(Fraction(frames) / self.spec.frame_rate, "the speech to generate for this text")
        return frames

    def split(self, encoded: EncodedStream, duration) -> list[EncodedStream]:
        """F5-TTS's sentence chunks for filler text (each sampled after the reference); one piece otherwise.

        Chunked pieces are snapped to the streams' common frame grid, so every stream cuts at the same instant.
        """
        state = encoded.state
        if self.aligned or duration is not None or state.get("reference") is None or encoded.content is not None:
            return [encoded]
        reference = state["reference"]
        max_bytes = chunk_bytes(state["ref_text"], reference.seconds, self.pipeline.config.max_seconds,
                                state["speed"])
        pieces = chunk_text(state["text"], max_bytes)
        if len(pieces) == 1:
            return [encoded]
        model = self.pipeline.transformer
        grid = int(common_period(model.specs) * self.spec.frame_rate)
        prompt = encoded.prompt[: encoded.prompt.shape[0] // grid * grid]
        out = []
        for piece in pieces:
            chunk = EncodedStream(prompt=prompt, state={**state, "text": piece})
            chunk.estimate = -(-self._estimate(chunk, piece) // grid) * grid
            out.append(chunk)
        return out

    # ------------------------------------------------------------------------------------------ fit

    def fit(self, encoded: EncodedStream, prompt_frames: int, frames: int) -> StreamTrack:
        spec, state = self.spec, encoded.state
        prompt = fit_frames(encoded.prompt, prompt_frames, spec.channels)
        latent = torch.cat([prompt, fit_frames(encoded.content, frames, spec.channels, hold=False)])
        given = torch.zeros(prompt_frames + frames, dtype=torch.bool)
        given[:prompt_frames] = encoded.prompt is not None
        text, ref_text = state.get("text"), state.get("ref_text")
        if self.aligned:
            ref_ids = self._frame_ids(ref_text, prompt_frames) if prompt_frames else torch.empty(0, dtype=torch.long)
            ids = torch.cat([ref_ids, self._frame_ids(text, frames)])
            return StreamTrack(latent, given, frame_extras={TEXT_KEY: ids})
        if not text:
            ids = torch.tensor([PAD_ID], dtype=torch.long)
        else:
            full = prompt_text(ref_text, text) if prompt_frames and ref_text else text
            ids = torch.tensor(self.tokenizer.encode_text(full), dtype=torch.long)
        return StreamTrack(latent, given, extras={TEXT_KEY: ids})

    def _frame_ids(self, text: str | None, frames: int) -> torch.Tensor:
        if not text:
            return torch.full((frames,), PAD_ID, dtype=torch.long)
        return torch.as_tensor(self.tokenizer.frame_ids(text, num_frames=frames), dtype=torch.long)

    # ------------------------------------------------------------------------------------------ decode

    @property
    def vocoder(self):
        vocoder = getattr(self.pipeline, "vocoder", None)
        if vocoder is None:
            if not hasattr(self, "_griffin_lim"):
                from .vocoder import GriffinLimVocoder

                self._griffin_lim = GriffinLimVocoder()
            return self._griffin_lim
        return vocoder

    def decode(self, latent: torch.Tensor, cond, encoded: EncodedStream, progress: bool = False) -> dict[str, Any]:
        state = encoded.state
        if state.get("role") == "given":
            return {"audio": restore_rms(state["audio"], state["audio_rms"])}  # given speech, untouched
        vocoder = self.vocoder
        device = next(iter(vocoder.state_dict().values()), latent).device
        wave = vocoder.decode(latent.T[None].to(device, torch.float32))[0].float().cpu().numpy()
        if state.get("reference") is not None:
            wave = restore_rms(wave, state["reference"].original_rms, state["target_rms"])
        elif state.get("audio_rms") is not None:
            wave = restore_rms(wave, state["audio_rms"])
        return {"audio": wave.astype(np.float32)}

    def output_suffixes(self, inputs: Mapping[str, Any]) -> set[str]:
        return {".wav"}

    def save(self, outputs: Mapping[str, Any], folder: Path, stem: str) -> list[Path]:
        return [write_wav(Path(folder) / f"{stem}.wav", outputs["audio"], SAMPLE_RATE)]
