"""``JAMFlowPipeline``: JAM-Flow (F5-TTS speech + LivePortrait facial motion) as a saved ``MMFlowPipeline``.

Every task (talking head, audio → motion, dubbing, video → video, TTS, editing) is a ``TaskPreset`` the plugin
registers; the generic pipeline runs it with the audio and motion streams' codecs (``mmflow_audio_f5tts.codec``,
``mmflow_motion_liveportrait.codec``). What is JAM-Flow's own is here: the components those codecs use (tokenizer,
motion normaliser, vocoder, LivePortrait renderer), the call signature JAM-Flow users know, and the
``JAMFlowOutput`` with its wav / template / mp4 writer.

Text conditioning is the model's (its audio backbone's ``text_conditioning``): ``F5Tokenizer`` for F5-TTS's
filler-padded text (official checkpoints), a frame-aligned tokenizer (``PhonemeTokenizer``) for ``aligned``; a
tokenizer that contradicts the model is refused when the pipeline is built.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from mmflow_audio_f5tts.audio_io import ReferenceAudio
from mmflow_audio_f5tts.mel import SAMPLE_RATE
from mmflow_motion_liveportrait.motion_stream import MotionNormalizer
from mmflow_motion_liveportrait.motion_template import MotionTemplate

from mmflow import FlowMatchingScheduler, MMDiT
from mmflow.codecs import InputError
from mmflow.pipeline import MMFlowPipeline

from .outputs import JAMFlowOutput

AUDIO, MOTION = "audio", "motion"
MissingInputError = InputError
"""The error of a missing, unknown or contradictory input (the generic pipeline's ``InputError``)."""


class JAMFlowPipeline(MMFlowPipeline):
    """Joint speech + facial-motion generation with a JAM-Flow ``MMDiT``.

    Content inputs a task does not take (e.g. ``audio=`` for ``tts``) are refused; settings it has no use for
    (``portrait``, ``idle``, ``size``, ``speed``... for a task without that stream or role) are ignored.

    Args:
        transformer: The MMDiT with an F5-TTS ``audio`` stream and a LivePortrait ``motion`` stream.
        scheduler: Steps, sway and solver (``FlowMatchingScheduler``).
        tokenizer: ``F5Tokenizer`` (filler-padded text) or a frame-aligned tokenizer (``aligned = True``),
            matching the audio backbone's ``text_conditioning``.
        motion_normalizer: The e_mouth / e_rest statistics the motion stream was trained with.
        vocoder: Mel → waveform (``Vocos`` or a trained small vocoder); None uses Griffin-Lim.
        renderer: LivePortrait's networks (``LivePortraitComponents``); None renders with the weights-free
            landmark fallback unless ``liveportrait_weights`` is given.
        max_seconds: Longest window the model samples at once (its training length).
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
        missing = sorted({AUDIO, MOTION} - set(transformer.stream_names))
        if missing:
            raise ValueError(
                f"a JAM-Flow transformer needs streams {[AUDIO, MOTION]}; it lacks {missing} "
                f"(it has {transformer.stream_names}); build one with mmflow_jamflow.build_jamflow"
            )
        conditioning = getattr(transformer.backbones[AUDIO], "text_conditioning", "filler")
        if bool(getattr(tokenizer, "aligned", False)) != (conditioning == "aligned"):
            raise ValueError(
                f"the tokenizer {type(tokenizer).__name__} gives "
                f"{'one token per mel frame' if getattr(tokenizer, 'aligned', False) else 'filler-padded text'}, "
                f"but the model's audio stream was trained with text_conditioning={conditioning!r}; use "
                f"{'a PhonemeTokenizer' if conditioning == 'aligned' else 'an F5Tokenizer'}"
            )
        super().__init__(transformer, scheduler, max_seconds)
        self.register_modules(tokenizer=tokenizer, motion_normalizer=motion_normalizer, vocoder=vocoder, renderer=renderer)

    @property
    def aligned(self) -> bool:
        """True when the audio stream takes one token per mel frame (phoneme-aligned text)."""
        return self.codec(AUDIO).aligned

    @classmethod
    def cli_main(cls, argv: list[str], folder) -> int:
        """``mmflow generate`` for a JAM-Flow folder: JAM-Flow's own flags (``--text``, ``--portrait``...)."""
        from .cli import parse_generate_args

        args = parse_generate_args(argv)
        args.model = args.model or str(folder)
        return args.run(args)

    @classmethod
    def app_widgets(cls):
        """JAM-Flow's widgets in ``mmflow app`` (``mmflow_jamflow.app_widgets``)."""
        from .app_widgets import JAMFlowWidgets

        return JAMFlowWidgets()

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
        idle=None,
        size: int | None = None,
        spans: Mapping[str, Sequence[tuple[float, float]]] | None = None,
        duration: float | None = None,
        speed: float | None = None,
        target_rms: float | None = None,
        resampler: str | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | Mapping[str, float] = 2.0,
        uncond_joint_view: Mapping[str, bool] | None = None,
        joint_attention: bool = True,
        seed: int | Sequence[int] = 0,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
        latents: Mapping[str, torch.Tensor] | Sequence[Mapping[str, torch.Tensor]] | None = None,
        sway_coefficient: float | None = None,
        cross_fade: float | None = None,
        output_type: str = "np",
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
        progress: bool = True,
    ) -> JAMFlowOutput:
        """Run ``task`` for one prompt or a batch of prompts (lists: one entry per prompt).

        Args:
            task: ``talking_head``, ``tts``, ``audio_to_motion``, ``dubbing``, ``video_to_video`` or ``edit``
                (``mmflow tasks`` lists them with their inputs).
            text: Text to say; for ``audio_to_motion`` optionally the transcript, for ``edit`` the transcript of
                the whole result.
            ref_audio, ref_text: Reference voice clip and its transcript (shared by all prompts).
            audio: Given speech (file or 24 kHz waveform) for ``audio_to_motion`` and ``edit``.
            motion: Given motion: a LivePortrait template (.pkl/.npz), a ``MotionTemplate``, or expressions
                ``T×21×3`` at the motion stream's rate; or a video with ``liveportrait_weights``.
            portrait: Image to render the motion on (video output); None: no video.
            renderer: A ready renderer (``make_renderer``) instead of ``portrait``.
            liveportrait_weights: Official LivePortrait weights folder (rendering and motion extraction).
            idle: The face besides the mouth when no motion is given: ``"natural"`` (default: blinks and drift
                from the seed), ``"off"`` (the mean face) or a template.
            size: Longer side of the rendered video in pixels (default: the portrait's, at most 1024).
            spans: ``edit``: ``{"audio": [(start, end)], "motion": [...]}`` seconds to regenerate.
            duration: Seconds to generate (after the reference); default: from the text or the given streams.
            speed: Speaking-rate factor of the duration estimate (default 1.0).
            target_rms: Loudness a quiet reference is raised to (default 0.1, F5-TTS's ``target_rms``).
            resampler: ``"soxr"`` (default) or ``"f5"`` (F5-TTS's exact windowed sinc) for references at other rates.
            num_inference_steps: Solver steps (default: the scheduler's).
            guidance_scale: CFG scale, one for all streams or per stream ``{"audio": 2, "motion": 2}``.
            uncond_joint_view: Per stream joint view in the unconditional pass (JAM-Flow's guidance variant).
            joint_attention: False runs every stream with its joint view off (the ablation of the coupling).
            seed: Noise seed; prompt i uses ``seed + i`` (or one seed per prompt); or ``generator`` (diffusers').
            sway_coefficient: Sway sampling for this call (default: the scheduler's).
            cross_fade: Seconds of cross-fade between the text chunks of long filler-text prompts (default 0.16).
            output_type: ``"np"`` (waveforms, expressions, frames) or ``"latent"`` (mel and normalised motion).
            latents, callback_on_step_end, callback_on_step_end_tensor_inputs: as in ``MMFlowPipeline.__call__``.
            progress: Progress bars over sampling and rendering.
        """
        inputs = {"text": text, "ref_audio": ref_audio, "ref_text": ref_text, "audio": audio, "motion": motion}
        settings = {"portrait": portrait if output_type == "np" else None, "renderer": renderer,
                    "liveportrait_weights": liveportrait_weights, "idle": idle, "size": size, "speed": speed,
                    "target_rms": target_rms, "resampler": resampler}
        declared = {item.name for item in self.task_inputs(task)}  # settings a task has no use for are left out
        inputs.update({name: value for name, value in settings.items() if name in declared})
        result = super().__call__(
            task, spans=spans, duration=duration, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
            uncond_joint_view=uncond_joint_view, joint_attention=joint_attention, seed=seed, generator=generator,
            sway_coefficient=sway_coefficient, cross_fade=cross_fade, output_type=output_type, progress=progress,
            latents=latents, callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
            **{name: value for name, value in inputs.items() if value is not None},
        )
        mels = [latent[AUDIO].float().cpu().numpy() for latent in result.latents]
        has_motion = MOTION in result.latents[0]
        if output_type == "latent":
            motions = [torch.cat([latent[MOTION], cond[MOTION]], -1).float().cpu().numpy()
                       for latent, cond in zip(result.latents, result.conds, strict=True)] if has_motion else None
            return JAMFlowOutput(audios=None, motions=motions, videos=None, mels=mels)
        outputs = result.outputs
        videos = [out["video"] for out in outputs] if any("video" in out for out in outputs) else None
        poses = [out.get("head_pose") for out in outputs] if any("head_pose" in out for out in outputs) else None
        return JAMFlowOutput(audios=[out[AUDIO] for out in outputs],
                             motions=[out[MOTION] for out in outputs] if has_motion else None,
                             videos=videos, mels=mels, sample_rate=SAMPLE_RATE,
                             fps=float(self.transformer.stream_spec(MOTION).frame_rate), poses=poses)
