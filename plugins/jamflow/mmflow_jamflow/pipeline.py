"""``JAMFlowPipeline``: every JAM-Flow task (talking head, audio → motion, dubbing, video → video, TTS, editing)
through one diffusers pipeline.

Each task is a choice of given and generated frames in the two streams (``mmflow.tasks``). The pipeline turns
the user's inputs (text, reference voice, speech, motion, portrait) into one ``Timeline`` per prompt, samples
them with ``LongFormSampler`` (windows with overlapping context when longer than the model's training length),
then decodes: mel → waveform with the vocoder, normalised e_mouth/e_rest → LivePortrait expressions, and
expressions → video frames on the portrait.

Text conditioning depends on the tokenizer. ``F5Tokenizer`` (official F5-TTS checkpoints): token ids padded with
filler to the mel length; the duration is estimated from the reference as F5-TTS does, and long text is split
into sentence chunks, each sampled after the reference and cross-faded. A frame-aligned tokenizer
(``PhonemeTokenizer``, ``aligned = True``): one phoneme id per mel frame from espeak-ng's timings; the duration
is the text's spoken length, and long text is cut into windows anywhere.
"""

from __future__ import annotations

import logging
import numbers
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch
from diffusers import DiffusionPipeline
from mmflow_audio_f5tts.audio_io import (
    ReferenceAudio,
    load_reference_audio,
    load_speech,
    normalize_rms,
    require_audible,
    restore_rms,
)
from mmflow_audio_f5tts.backbone import TEXT_KEY
from mmflow_audio_f5tts.mel import N_MELS, SAMPLE_RATE, MelSpectrogram
from mmflow_audio_f5tts.text import PAD_ID, estimate_duration, prompt_text, reference_frames
from mmflow_audio_f5tts.tts import chunk_text, finish_reference_text
from mmflow_audio_f5tts.vocoder import GriffinLimVocoder
from mmflow_motion_liveportrait.motion_stream import MotionNormalizer
from mmflow_motion_liveportrait.motion_template import MotionTemplate, load_motion_template

from mmflow import FlowMatchingScheduler, Guidance, MMDiT
from mmflow.long_form import LongFormSampler, StreamTrack, Timeline, common_period
from mmflow.plugins import get_registry
from mmflow.tasks import span_frames

from .model_folder import check_model_folder
from .outputs import JAMFlowOutput
from .validation import WINDOW, check_call_arguments, check_seconds, motion_kind

logger = logging.getLogger(__name__)

AUDIO, MOTION = "audio", "motion"
MOTION_FPS = 25
TASK_INPUTS = {
    "talking_head": "text (+ ref_audio/ref_text) (+ portrait to render)",
    "tts": "text (+ ref_audio/ref_text)",
    "audio_to_motion": "audio (+ text, its transcript) (+ portrait)",
    "dubbing": "motion + text (+ ref_audio/ref_text) (+ portrait)",
    "video_to_video": "motion (from the video) + text (+ ref_audio/ref_text) (+ portrait)",
    "edit": "audio + motion + text (transcript of the result) + spans",
}


class MissingInputError(ValueError):
    """A task was called without an input it needs, or with inputs that contradict each other."""


@dataclass
class _Prompt:
    """One prompt's inputs after loading."""

    text: str | None
    reference: ReferenceAudio | None
    ref_text: str | None
    audio: np.ndarray | None  # given speech at 24 kHz, loudness-normalised
    audio_rms: float | None
    motion: np.ndarray | None  # given expressions (T, 21, 3) at 25 fps
    seed: int


@dataclass
class _Layout:
    """Where a prompt's output sits in its timeline(s): generated-part frames per chunk."""

    audio_from: list[int]
    motion_from: list[int]


def _as_list(value, count: int, name: str) -> list:
    if isinstance(value, list | tuple):
        if len(value) != count:
            raise MissingInputError(f"{name} has {len(value)} entries but there are {count} prompts")
        return list(value)
    return [value] * count


def _resample_motion(exp: np.ndarray, fps: float) -> np.ndarray:
    """Expressions at ``fps`` → 25 fps, linearly in time."""
    if abs(fps - MOTION_FPS) < 1e-6:
        return exp
    seconds = len(exp) / fps
    check_seconds(seconds, "the given motion")
    frames = max(1, round(seconds * MOTION_FPS))
    src = np.arange(len(exp)) / fps
    dst = np.arange(frames) / MOTION_FPS
    flat = exp.reshape(len(exp), -1)
    out = np.stack([np.interp(dst, src, flat[:, j]) for j in range(flat.shape[1])], axis=1)
    return out.reshape(frames, *exp.shape[1:]).astype(np.float32)


class JAMFlowPipeline(DiffusionPipeline):
    """Joint speech + facial-motion generation with a JAM-Flow ``MMDiT``.

    Args:
        transformer: The MMDiT with an F5-TTS ``audio`` stream and a LivePortrait ``motion`` stream.
        scheduler: Steps, sway and solver (``FlowMatchingScheduler``).
        tokenizer: ``F5Tokenizer`` (filler-padded text, official F5-TTS models) or a frame-aligned phoneme
            tokenizer (``aligned = True``).
        motion_normalizer: The e_mouth / e_rest statistics the motion stream was trained with.
        vocoder: Mel → waveform (``Vocos`` or a trained small vocoder); None uses Griffin-Lim.
        renderer: LivePortrait's networks (``LivePortraitComponents``) to render motion on a portrait; None
            renders with the weights-free landmark fallback (mouth only) unless ``liveportrait_weights`` is given.
        max_seconds: Longest window the model samples at once (its training length); longer inputs are cut into
            overlapping windows.
    """

    model_cpu_offload_seq = "transformer->vocoder"
    _optional_components = ["vocoder", "renderer"]

    def __init__(
        self,
        transformer: MMDiT,
        scheduler: FlowMatchingScheduler,
        tokenizer,
        motion_normalizer: MotionNormalizer,
        vocoder=None,
        renderer=None,
        max_seconds: float = 30.0,
    ):
        super().__init__()
        missing = sorted({AUDIO, MOTION} - set(transformer.stream_names))
        if missing:
            raise ValueError(
                f"a JAM-Flow transformer needs streams {[AUDIO, MOTION]}; it lacks {missing} "
                f"(it has {transformer.stream_names}); build one with mmflow_jamflow.build_jamflow"
            )
        self.register_modules(
            transformer=transformer,
            scheduler=scheduler,
            tokenizer=tokenizer,
            motion_normalizer=motion_normalizer,
            vocoder=vocoder,
            renderer=renderer,
        )
        self.register_to_config(max_seconds=WINDOW.check("max_seconds (the model's window)", max_seconds))
        self.mel = MelSpectrogram()

    # -------------------------------------------------------------------------------------------- loading

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """Load a saved pipeline folder; a missing plugin is reported with the package to install."""
        check_model_folder(pretrained_model_name_or_path)
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    @classmethod
    def cli_main(cls, argv: list[str], folder) -> int:
        """``mmflow generate`` for a JAM-Flow folder: JAM-Flow's own flags (``--text``, ``--portrait``...)."""
        import argparse

        from .cli import add_generate

        parser = argparse.ArgumentParser(prog="mmflow")
        add_generate(parser.add_subparsers())
        args = parser.parse_args(["generate", *argv])
        args.model = args.model or str(folder)
        return args.run(args)

    @property
    def aligned(self) -> bool:
        """True when the audio stream takes one token per mel frame (phoneme-aligned text)."""
        return bool(getattr(self.tokenizer, "aligned", False))

    @property
    def _vocoder(self):
        if self.vocoder is None:
            if not hasattr(self, "_griffin_lim"):
                self._griffin_lim = GriffinLimVocoder()
            return self._griffin_lim
        return self.vocoder

    # -------------------------------------------------------------------------------------------- call

    @torch.no_grad()
    def __call__(
        self,
        task: str = "talking_head",
        text: str | Sequence[str] | None = None,
        *,
        ref_audio: str | os.PathLike | ReferenceAudio | None = None,
        ref_text: str | None = None,
        audio: str | os.PathLike | np.ndarray | Sequence | None = None,
        motion: str | os.PathLike | np.ndarray | MotionTemplate | Sequence | None = None,
        portrait=None,
        renderer=None,
        liveportrait_weights: str | os.PathLike | None = None,
        idle: str | os.PathLike | MotionTemplate | None = "natural",
        size: int | None = None,
        spans: Mapping[str, Sequence[tuple[float, float]]] | None = None,
        duration: float | None = None,
        speed: float = 1.0,
        num_inference_steps: int | None = None,
        guidance_scale: float | Mapping[str, float] = 2.0,
        uncond_joint_view: Mapping[str, bool] | None = None,
        joint_attention: bool = True,
        seed: int | Sequence[int] = 0,
        output_type: str = "np",
        progress: bool = True,
    ) -> JAMFlowOutput:
        """Run ``task`` for one prompt or a batch of prompts.

        Args:
            task: ``talking_head``, ``tts``, ``audio_to_motion``, ``dubbing``, ``video_to_video`` or ``edit``
                (``mmflow tasks`` lists them).
            text: Text to say (one string per prompt); for ``audio_to_motion`` optionally the transcript, for
                ``edit`` the transcript of the whole result.
            ref_audio, ref_text: Reference voice clip and its transcript (shared by all prompts).
            audio: Given speech (file or 24 kHz waveform), one per prompt (``audio_to_motion``, ``edit``).
            motion: Given motion: a LivePortrait template (.pkl/.npz), a ``MotionTemplate``, or expressions
                ``T×21×3`` at 25 fps; or a video file with ``liveportrait_weights`` (``dubbing``,
                ``video_to_video``, ``edit``).
            portrait: Source image to render the motion on (mp4 output); None: no video. Rendered with the
                pipeline's ``renderer`` component, else ``liveportrait_weights``, else the landmark fallback.
            renderer: A ready renderer (``make_renderer``) instead of ``portrait``.
            liveportrait_weights: Official LivePortrait weights folder (rendering and motion extraction); None
                renders with the weights-free landmark fallback.
            idle: The face's non-mouth motion where no motion is given (talking head, audio → motion):
                ``"natural"`` (seeded blinks, brow life, gaze and drift from ``mmflow_motion_liveportrait.idle``),
                ``"off"`` (the model's mean face, frozen) or a motion template whose expression is used.
            size: Longer side of the rendered video in pixels (default: the portrait's, at most 1024).
            spans: ``edit`` only: ``{"audio": [(start, end)], "motion": [...]}`` seconds to regenerate.
            duration: Seconds to generate (after the reference); default: from the text, or the given stream.
            speed: Speaking rate factor for the duration estimate.
            num_inference_steps: Solver steps (default: the scheduler's).
            guidance_scale: CFG scale, one for all streams or per stream ``{"audio": 2, "motion": 2}``.
            uncond_joint_view: Per stream joint view in the unconditional pass (False: that stream's
                unconditional prediction ignores the other stream, JAM-Flow's guidance variant).
            joint_attention: False runs every stream with its joint view off (as if trained separately), the
                ablation of JAM-Flow's coupling.
            seed: Noise seed; prompt i uses ``seed + i`` (or give one seed per prompt).
            output_type: ``"np"`` (waveforms, expressions, frames) or ``"latent"`` (mel and normalised motion).
            progress: Progress bars over sampling and rendering.
        """
        if task not in TASK_INPUTS or task not in get_registry().tasks:
            raise ValueError(f"unknown task {task!r}; choose one of {sorted(TASK_INPUTS)}")
        if output_type not in ("np", "latent"):
            raise ValueError(f"output_type must be 'np' or 'latent', got {output_type!r}")
        check_call_arguments(speed=speed, duration=duration, num_inference_steps=num_inference_steps,
                             guidance_scale=guidance_scale, seed=seed, spans=spans)
        prompts = self._load_inputs(task, text, ref_audio, ref_text, audio, motion, liveportrait_weights, seed)
        render = renderer
        if render is None and portrait is not None and output_type == "np" and task != "tts":
            from mmflow_motion_liveportrait.render import make_renderer

            # built now: the face is detected (and bad portraits refused) before any heavy work
            if liveportrait_weights is None and self.renderer is not None:
                render = self.renderer.renderer(portrait, size=size)
            else:
                render = make_renderer(portrait, weights=liveportrait_weights, size=size)
        timelines, layouts = self._timelines(task, prompts, spans, duration, speed, idle)
        scheduler = self.scheduler
        if num_inference_steps is not None:  # a copy: the pipeline's scheduler keeps its configured steps
            scheduler = FlowMatchingScheduler.from_config(self.scheduler.config)
            scheduler.set_timesteps(num_inference_steps)
        guidance = self._guidance(task, guidance_scale, uncond_joint_view)
        max_seconds = self.config.max_seconds  # context: a third of a window, at most 2 s
        sampler = LongFormSampler(self.transformer, max_seconds, context_seconds=min(2.0, max_seconds / 3), pad_id=PAD_ID)
        joint_view = {AUDIO: False, MOTION: True} if task == "tts" else joint_attention
        results = sampler(
            [timeline for group in timelines for timeline in group],
            progress=progress,
            guidance=guidance,
            scheduler=scheduler,
            joint_view=joint_view,
        )
        return self._decode(task, prompts, timelines, layouts, results, output_type, render, progress)

    # -------------------------------------------------------------------------------------------- inputs

    def _load_inputs(self, task, text, ref_audio, ref_text, audio, motion, weights, seed) -> list[_Prompt]:
        count = max((len(v) for v in (text, audio, motion) if isinstance(v, list | tuple)), default=1)
        texts, audios = _as_list(text, count, "text"), _as_list(audio, count, "audio")
        motions = _as_list(motion, count, "motion")
        seeds = ([int(seed) + i for i in range(count)] if isinstance(seed, numbers.Integral)
                 else [int(s) for s in _as_list(list(seed), count, "seed")])
        needs_text = task in ("talking_head", "tts", "dubbing", "video_to_video", "edit")
        needs_audio, needs_motion = task in ("audio_to_motion", "edit"), task in ("dubbing", "video_to_video", "edit")
        for i in range(count):
            if needs_text and (texts[i] is None or not str(texts[i]).strip()):
                raise MissingInputError(f"task {task!r} needs text for prompt {i}; it takes {TASK_INPUTS[task]}")
            if needs_audio and audios[i] is None:
                raise MissingInputError(f"task {task!r} needs audio=... (given speech); it takes {TASK_INPUTS[task]}")
            if needs_motion and motions[i] is None:
                raise MissingInputError(f"task {task!r} needs motion=... (template, expressions or video); it "
                                        f"takes {TASK_INPUTS[task]}")
        reference = None
        if ref_audio is not None and task in ("audio_to_motion", "edit"):
            raise MissingInputError(f"task {task!r} takes no ref_audio=: the voice is that of the given audio")
        if ref_audio is not None:
            if not ref_text or not ref_text.strip():
                raise MissingInputError("ref_audio was given without ref_text; give the transcript of the reference")
            reference = ref_audio if isinstance(ref_audio, ReferenceAudio) else load_reference_audio(ref_audio)
            ref_text = finish_reference_text(ref_text)
        elif not self.aligned and task in ("talking_head", "tts", "dubbing", "video_to_video"):
            raise MissingInputError(
                "this model conditions on F5-TTS filler-padded text and needs a reference voice: pass ref_audio= "
                "(a 3-12 s clip) and ref_text= (its transcript)"
            )
        prompts = []
        for i in range(count):
            given_audio, rms = None, None
            if audios[i] is not None and not needs_audio:
                raise MissingInputError(f"task {task!r} takes no audio=... (given speech); for a reference voice "
                                        f"pass ref_audio= and ref_text=")
            if audios[i] is not None:
                if isinstance(audios[i], np.ndarray):
                    source, wave = f"audio[{i}]", require_audible(audios[i], f"audio[{i}]")
                else:
                    source, wave = audios[i], load_speech(audios[i])
                check_seconds(len(wave) / SAMPLE_RATE, f"audio {source}")
                given_audio, rms = normalize_rms(np.asarray(wave, np.float32))
            given_motion = None
            if motions[i] is not None and task != "tts":
                extractor = weights if weights is not None else getattr(self.renderer, "motion_extractor", None)
                given_motion = self._load_motion(motions[i], extractor)
            prompts.append(_Prompt(texts[i], reference, ref_text, given_audio, rms, given_motion, seeds[i]))
        return prompts

    @staticmethod
    def _load_motion(motion, weights) -> np.ndarray:
        """Expressions ``(T, 21, 3)`` at 25 fps from a template, an array or a video (with LivePortrait weights)."""
        if isinstance(motion, np.ndarray | torch.Tensor):
            exp = np.asarray(motion, np.float32)
            if exp.ndim != 3 or exp.shape[1:] != (21, 3):
                raise MissingInputError(f"motion array must be T×21×3 expressions at 25 fps, got {exp.shape}")
            return exp
        if isinstance(motion, MotionTemplate):
            return _resample_motion(motion.exp, motion.fps)
        path = os.fspath(motion)
        if motion_kind(path) == "template":
            template = load_motion_template(path)
            return _resample_motion(template.exp, template.fps)
        if weights is None:
            raise MissingInputError(
                f"motion {path!r} is a video: extracting its motion needs liveportrait_weights= (the official "
                f"LivePortrait weights folder), or pass a motion template (.pkl/.npz)"
            )
        from mmflow_motion_liveportrait.extract import extract_motion

        template = extract_motion(path, weights, fps=MOTION_FPS)
        return template.exp

    # -------------------------------------------------------------------------------------------- timelines

    def _text_ids(self, text: str | None, frames: int | None = None, ref_text: str | None = None) -> torch.Tensor:
        """Token ids: per frame (aligned, ``frames`` long) or filler-style (reference transcript + text)."""
        if self.aligned:
            if not text:
                return torch.full((frames,), PAD_ID, dtype=torch.long)
            return torch.as_tensor(self.tokenizer.frame_ids(text, num_frames=frames), dtype=torch.long)
        if not text:
            return torch.tensor([PAD_ID], dtype=torch.long)
        full = prompt_text(ref_text, text) if ref_text else text
        return torch.tensor(self.tokenizer.encode_text(full), dtype=torch.long)

    def _gen_frames(self, prompt: _Prompt, text: str, duration: float | None, speed: float) -> int:
        """Mel frames to generate after the reference for ``text``."""
        spec = self.transformer.stream_spec(AUDIO)
        if duration is not None:
            if not duration > 0:
                raise MissingInputError(f"duration must be positive seconds, got {duration}")
            return spec.num_frames(Fraction(duration).limit_denominator(100_000))
        if self.aligned:
            return len(self.tokenizer.frame_ids(text, speed=speed))
        ref = prompt.reference
        ref_frames = reference_frames(ref.waveform.shape[-1])
        total = estimate_duration(ref_frames, prompt.ref_text, text, speed=speed)
        ids = len(self.tokenizer.encode_text(prompt_text(prompt.ref_text, text)))
        cond_frames = ref_frames + 1  # the reference's mel frames (centred STFT)
        return max(total, max(ids, cond_frames) + 1) - cond_frames

    def _timelines(self, task, prompts, spans, duration, speed, idle="off"):
        spec_a, spec_m = self.transformer.stream_spec(AUDIO), self.transformer.stream_spec(MOTION)
        period = common_period({AUDIO: spec_a, MOTION: spec_m})
        grid_a = int(period * spec_a.frame_rate)
        if spans and task != "edit":
            raise MissingInputError(f"spans are for task 'edit'; task {task!r} regenerates whole streams")
        unknown = sorted(set(spans or {}) - {AUDIO, MOTION})
        if unknown:
            raise MissingInputError(f"spans name unknown stream(s) {unknown}; use 'audio' and/or 'motion'")
        timelines, layouts = [], []
        for prompt in prompts:
            pieces = [prompt.text]
            if task in ("talking_head", "tts") and not self.aligned and duration is None:
                max_bytes = int(len(prompt.ref_text.encode()) / prompt.reference.seconds
                                * max(self.config.max_seconds - prompt.reference.seconds, 1.0) * speed)
                pieces = chunk_text(prompt.text, max_bytes)
            snap = len(pieces) > 1
            group, layout = [], _Layout([], [])
            for k, piece in enumerate(pieces):
                timeline, audio_from = self._timeline(task, prompt, piece, spans, duration, speed, snap, grid_a, idle)
                timeline.seed = prompt.seed + k  # chunk k of a text: seed + k, as F5-TTS
                group.append(timeline)
                layout.audio_from.append(audio_from)
                layout.motion_from.append(spec_m.num_frames(Fraction(audio_from) / spec_a.frame_rate))
            timelines.append(group)
            layouts.append(layout)
        return timelines, layouts

    def _timeline(self, task, prompt: _Prompt, text, spans, duration, speed, snap: bool, grid_a: int, idle="off"):
        """One sample: audio = [reference | generated] or given speech; motion follows the same seconds."""
        spec_a, spec_m = self.transformer.stream_spec(AUDIO), self.transformer.stream_spec(MOTION)
        device, dtype = self.transformer.device, self.transformer.dtype
        ref_mel = None
        if prompt.reference is not None and task not in ("audio_to_motion", "edit"):
            ref_mel = self.mel.time_major(torch.from_numpy(prompt.reference.waveform))[0]
            if snap:
                ref_mel = ref_mel[: ref_mel.shape[0] // grid_a * grid_a]
        ref_n = 0 if ref_mel is None else ref_mel.shape[0]
        given_exp = prompt.motion
        # ---- audio frames
        if prompt.audio is not None:
            mel = self.mel.time_major(torch.from_numpy(prompt.audio))[0]
            n_gen, audio_given = mel.shape[0], True
        else:
            if given_exp is not None and duration is None and task in ("dubbing", "video_to_video"):
                n_gen = spec_a.num_frames(Fraction(len(given_exp), MOTION_FPS))
            else:
                n_gen = self._gen_frames(prompt, text, duration, speed)
                check_seconds(n_gen / spec_a.frame_rate, "the speech to generate")
            if snap:
                n_gen = -(-n_gen // grid_a) * grid_a
            mel, audio_given = torch.zeros(n_gen, N_MELS), False
        n_a = ref_n + n_gen
        latent_a = torch.cat([ref_mel, mel]) if ref_mel is not None else mel
        given_a = torch.zeros(n_a, dtype=torch.bool)
        given_a[:ref_n] = True
        given_a[ref_n:] = audio_given
        # ---- text
        if self.aligned:
            ref_ids = self._text_ids(prompt.ref_text, ref_n) if ref_n else torch.empty(0, dtype=torch.long)
            text_track = {"frame_extras": {TEXT_KEY: torch.cat([ref_ids, self._text_ids(text, n_gen)])}}
        else:
            text_track = {"extras": {TEXT_KEY: self._text_ids(text, ref_text=prompt.ref_text if ref_n else None)}}
        # ---- motion
        seconds = Fraction(n_a) / spec_a.frame_rate
        n_m = spec_m.num_frames(seconds)
        m_from = spec_m.num_frames(Fraction(ref_n) / spec_a.frame_rate)
        norm = self.motion_normalizer
        mouth = torch.zeros(n_m, norm.mouth_channels)
        rest = torch.zeros(n_m, norm.rest_channels)
        given_m = torch.zeros(n_m, dtype=torch.bool)
        if given_exp is None and task != "tts":  # no driving motion: condition on an idle face, not a frozen one
            rest = self._idle_rest(idle, n_m, prompt.seed, spec_m.frame_rate, rest)
        if given_exp is not None:
            if prompt.audio is not None and abs(len(given_exp) - (n_m - m_from)) > 1:
                raise MissingInputError(
                    f"the given audio lasts {float(seconds):.2f} s but the given motion "
                    f"{len(given_exp) / MOTION_FPS:.2f} s; give inputs of the same duration"
                )
            e_mouth, e_rest = norm.normalize(torch.from_numpy(given_exp))
            frames = min(len(given_exp), n_m - m_from)
            mouth[m_from : m_from + frames] = e_mouth[:frames]
            rest[m_from : m_from + frames] = e_rest[:frames]
            if frames < n_m - m_from:  # hold the last pose
                rest[m_from + frames :] = e_rest[frames - 1]
            given_m[m_from : m_from + frames] = task in ("dubbing", "edit")
        if task == "tts":
            given_m[:] = True  # the audio stream does not look at motion; nothing to generate there
        # ---- edit spans
        if task == "edit":
            for name, given, spec in ((AUDIO, given_a, spec_a), (MOTION, given_m, spec_m)):
                for start, end in (spans or {}).get(name, []):
                    first, last = span_frames(spec, start, end)
                    if first >= len(given):
                        raise MissingInputError(f"edit span ({start}, {end}) s starts after the end of {name!r} "
                                                f"({spec.seconds(len(given)):.2f} s)")
                    given[first:last] = False
            if not spans or not any(spans.values()):
                raise MissingInputError("task 'edit' needs spans={'audio': [(start, end)], ...} to regenerate")
        tracks = {
            AUDIO: StreamTrack(latent_a.to(device, dtype), given_a.to(device),
                               **{k: {n: v.to(device) for n, v in d.items()} for k, d in text_track.items()}),
            MOTION: StreamTrack(mouth.to(device, dtype), given_m.to(device), rest.to(device, dtype)),
        }
        return Timeline(tracks, seed=prompt.seed), ref_n

    def _idle_rest(self, idle, frames: int, seed: int, frame_rate, rest: torch.Tensor) -> torch.Tensor:
        """Normalised e_rest of the idle track (``idle.idle_track``), or ``rest`` unchanged when it is off."""
        from mmflow_motion_liveportrait.idle import idle_track

        norm = self.motion_normalizer
        neutral = norm.denormalize(torch.zeros(1, norm.mouth_channels), torch.zeros(1, norm.rest_channels))[0]
        exp = idle_track(idle, frames, seed, frame_rate, neutral.numpy())
        return rest if exp is None else norm.normalize(torch.from_numpy(exp))[1].to(rest.dtype)

    def _guidance(self, task, scale, uncond_joint_view) -> Guidance | None:
        scales = dict(scale) if isinstance(scale, Mapping) else {AUDIO: float(scale), MOTION: float(scale)}
        if task == "tts":
            scales.pop(MOTION, None)
        guidance = Guidance(scales=scales, joint_view=dict(uncond_joint_view or {}))
        return guidance if guidance.enabled else None

    # -------------------------------------------------------------------------------------------- decoding

    def _decode(self, task, prompts, timelines, layouts, results, output_type, renderer, progress) -> JAMFlowOutput:
        flat = iter(results)
        mels, mouths, rests = [], [], []
        for group, layout in zip(timelines, layouts, strict=True):
            pieces = [next(flat) for _ in group]
            mels.append(_concat([p[AUDIO][a:] for p, a in zip(pieces, layout.audio_from, strict=True)],
                                self._fade_frames(AUDIO)))
            mouths.append(_concat([p[MOTION][m:] for p, m in zip(pieces, layout.motion_from, strict=True)],
                                  self._fade_frames(MOTION)))
            rests.append(_concat([g.tracks[MOTION].cond[m:] for g, m in zip(group, layout.motion_from, strict=True)],
                                 self._fade_frames(MOTION)))
        wants_motion = task != "tts"
        if output_type == "latent":
            return JAMFlowOutput(
                audios=None,
                motions=[torch.cat([m, r], -1).float().cpu().numpy() for m, r in zip(mouths, rests, strict=True)]
                if wants_motion else None,
                videos=None,
                mels=[m.float().cpu().numpy() for m in mels],
            )
        audios = []
        for prompt, mel in zip(prompts, mels, strict=True):
            if task == "audio_to_motion" and prompt.audio is not None:
                audios.append(restore_rms(prompt.audio, prompt.audio_rms))  # the given speech, untouched
                continue
            vocoder = self._vocoder
            wave = vocoder.decode(mel.T[None].to(next(iter(vocoder.state_dict().values()), mel).device,
                                                 torch.float32))[0].float().cpu().numpy()
            if prompt.reference is not None:
                wave = restore_rms(wave, prompt.reference.original_rms)
            elif prompt.audio_rms is not None:
                wave = restore_rms(wave, prompt.audio_rms)
            audios.append(wave.astype(np.float32))
        motions = None
        if wants_motion:
            norm = self.motion_normalizer
            motions = [norm.denormalize(m.float().cpu(), r.float().cpu()).numpy() for m, r in
                       zip(mouths, rests, strict=True)]
        videos = None
        if renderer is not None and motions is not None:
            videos = [renderer.render(exp, progress=progress) for exp in motions]
        return JAMFlowOutput(audios=audios, motions=motions, videos=videos,
                             mels=[m.float().cpu().numpy() for m in mels])

    def _fade_frames(self, name: str) -> int:
        return self.transformer.stream_spec(name).num_frames(Fraction(4, 25))


def _concat(pieces: list[torch.Tensor], fade: int) -> torch.Tensor:
    """Join consecutive chunks with a linear cross-fade of ``fade`` frames (shortened for short pieces)."""
    out = pieces[0]
    for piece in pieces[1:]:
        n = min(fade, out.shape[0], piece.shape[0])
        if n == 0:
            out = torch.cat([out, piece])
            continue
        w = torch.linspace(0, 1, n + 2, dtype=out.dtype, device=out.device)[1:-1, None]
        out = torch.cat([out[:-n], (1 - w) * out[-n:] + w * piece[:n], piece[n:]])
    return out

