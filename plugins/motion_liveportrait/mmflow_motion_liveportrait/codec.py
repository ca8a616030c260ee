"""The LivePortrait motion stream's codec: templates, expression arrays or videos in; expressions, templates and
video frames out.

The stream generates the mouth keypoints (normalised e_mouth) conditioned on the other 17 (e_rest), at the
stream's frame rate. What a task gives it (``mmflow.codecs``):

- ``given`` / ``edit``: ``motion`` (a ``.pkl``/``.npz`` template, a ``MotionTemplate``, an expression array
  ``T×21×3`` at the stream's rate, or a video with LivePortrait weights); its mouth is the content, its e_rest the
  condition (the last pose held when the stream outlasts it).
- ``generate``: optionally ``motion`` whose e_rest drives the face (video → video); without it, the condition is
  an idle face (``idle``: blinks and drift from the prompt's seed, ``"off"``, or a template's expression).

Any role takes a ``portrait`` (and ``liveportrait_weights``, or a ready ``renderer``) to render the motion as
video frames; the renderer is built in ``encode``, so a portrait without a face is refused before sampling.
The pipeline's ``motion_normalizer`` component holds the statistics the stream was trained with.
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
from mmflow.long_form import StreamTrack
from mmflow.tasks import TaskInput
from mmflow.validation import check_seconds

from .idle import IDLE_CHOICES, idle_track
from .keypoints import NUM_KEYPOINTS
from .motion_template import (
    MotionTemplate,
    load_motion_template,
    save_motion_template,
    template_from_expressions,
)

TEMPLATE_SUFFIXES = (".pkl", ".npz")


def motion_file_kind(path: str | os.PathLike) -> str:
    """``"template"`` or ``"video"`` for a motion file by its extension; anything else is refused by name."""
    from .video import VIDEO_SUFFIXES

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"motion {str(path)!r} does not exist or is not a file")
    suffix = path.suffix.lower()
    if suffix in TEMPLATE_SUFFIXES:
        return "template"
    if suffix in VIDEO_SUFFIXES:
        return "video"
    raise InputError(f"motion {str(path)!r} is neither a motion template ({', '.join(TEMPLATE_SUFFIXES)}) nor a "
                     f"video ({', '.join(VIDEO_SUFFIXES)}); to animate an image pass it as the portrait")


def resample_expressions(exp: np.ndarray, fps: float, rate: Fraction) -> np.ndarray:
    """Expressions ``T×K×3`` at ``fps`` → the stream's ``rate``, linearly in time."""
    if abs(fps - float(rate)) < 1e-6:
        return exp
    seconds = len(exp) / fps
    check_seconds(seconds, "the given motion")
    frames = max(1, round(seconds * float(rate)))
    src = np.arange(len(exp)) / fps
    dst = np.arange(frames) / float(rate)
    flat = exp.reshape(len(exp), -1)
    out = np.stack([np.interp(dst, src, flat[:, j]) for j in range(flat.shape[1])], axis=1)
    return out.reshape(frames, *exp.shape[1:]).astype(np.float32)


class LivePortraitMotionCodec:
    """Codec of a LivePortrait ``motion`` stream in a pipeline with a ``motion_normalizer`` component."""

    def __init__(self, spec, pipeline):
        self.spec, self.pipeline = spec, pipeline

    @property
    def normalizer(self):
        normalizer = getattr(self.pipeline, "motion_normalizer", None)
        if normalizer is None:
            raise InputError("the motion stream needs the pipeline's `motion_normalizer` component")
        return normalizer

    def inputs(self, role: str) -> tuple[TaskInput, ...]:
        rate = f"{float(self.spec.frame_rate):g} fps"
        motion = (f"a LivePortrait template (.pkl/.npz), a MotionTemplate, expressions T×{NUM_KEYPOINTS}×3 at {rate}, "
                  f"or a video (with liveportrait_weights)")
        render = (
            TaskInput("portrait", "image to animate (video output); none: no video"),
            TaskInput("renderer", "a ready renderer (make_renderer) instead of portrait"),
            TaskInput("liveportrait_weights", "official LivePortrait weights folder (rendering, motion from video); "
                      "none: the weights-free landmark renderer"),
            TaskInput("size", "longer side of the video in pixels (default: the portrait's, at most 1024)"),
        )
        if role in ("given", "edit"):
            return (TaskInput("motion", f"given motion: {motion}", required=True), *render)
        return (TaskInput("motion", f"motion whose non-mouth expression drives the face: {motion}"),
                TaskInput("idle", f"face motion besides the mouth when no motion is given: one of {IDLE_CHOICES} "
                          f"(default natural) or a template"),
                *render)

    # ------------------------------------------------------------------------------------------ encode

    def encode(self, inputs: Mapping[str, Any], role: str, seed: int = 0) -> EncodedStream:
        weights = inputs.get("liveportrait_weights")
        state: dict[str, Any] = {"seed": seed, "idle": inputs.get("idle", "natural"),
                                 "renderer": self._renderer(inputs, weights)}
        if inputs.get("motion") is None:
            if state["idle"] not in IDLE_CHOICES and not isinstance(state["idle"], str | os.PathLike | MotionTemplate):
                raise InputError(f"idle must be one of {IDLE_CHOICES} or a motion template, got {state['idle']!r}")
            return EncodedStream(state=state)
        motion = inputs["motion"]
        if isinstance(motion, str | os.PathLike) and motion_file_kind(motion) == "template":
            motion = load_motion_template(motion)  # read once: its expressions and its head pose
        exp = self.load(motion, weights)
        state["pose"] = self.pose(motion, len(exp)) if isinstance(motion, MotionTemplate) else None
        mouth, rest = self.normalizer.normalize(torch.from_numpy(exp))
        return EncodedStream(content=mouth.float(), cond=rest.float(), state=state)

    def pose(self, motion: MotionTemplate, frames: int) -> dict[str, np.ndarray]:
        """A template's head pose (scale, R, t) at the stream's rate (nearest frame), for the renderer."""
        index = np.minimum(np.round(np.arange(frames) / float(self.spec.frame_rate) * motion.fps).astype(int),
                           motion.num_frames - 1)
        return {"scale": motion.scale[index], "R": motion.R[index], "t": motion.t[index]}

    def load(self, motion, weights=None) -> np.ndarray:
        """Expressions ``T×21×3`` at the stream's rate from a template, an array or a video (LivePortrait weights,
        or the pipeline renderer's motion extractor)."""
        rate = self.spec.frame_rate
        if isinstance(motion, np.ndarray | torch.Tensor):
            exp = np.asarray(motion, np.float32)
            if exp.ndim != 3 or exp.shape[1:] != (NUM_KEYPOINTS, 3) or not len(exp):
                raise InputError(f"motion array must be T×{NUM_KEYPOINTS}×3 expressions at {float(rate):g} fps, got "
                                 f"{exp.shape}")
            check_seconds(Fraction(len(exp)) / rate, "the given motion")
            return exp
        if isinstance(motion, MotionTemplate):
            return resample_expressions(motion.exp, motion.fps, rate)
        path = os.fspath(motion)
        if motion_file_kind(path) == "template":
            template = load_motion_template(path)
            return resample_expressions(template.exp, template.fps, rate)
        extractor = weights if weights is not None else getattr(getattr(self.pipeline, "renderer", None),
                                                                "motion_extractor", None)
        if extractor is None:
            raise InputError(f"motion {path!r} is a video: extracting its motion needs liveportrait_weights= (the "
                             f"official LivePortrait weights folder), or pass a motion template (.pkl/.npz)")
        from .extract import extract_motion

        return extract_motion(path, extractor, fps=float(rate)).exp

    def _renderer(self, inputs: Mapping[str, Any], weights):
        if inputs.get("renderer") is not None:
            return inputs["renderer"]
        portrait = inputs.get("portrait")
        if portrait is None:
            return None
        size = inputs.get("size")
        components = getattr(self.pipeline, "renderer", None)
        if weights is None and components is not None:
            return components.renderer(portrait, size=size)
        from .render import make_renderer

        return make_renderer(portrait, weights=weights, size=size)

    # ------------------------------------------------------------------------------------------ fit

    def fit(self, encoded: EncodedStream, prompt_frames: int, frames: int) -> StreamTrack:
        normalizer = self.normalizer
        mouth = torch.zeros(prompt_frames + frames, normalizer.mouth_channels)
        rest = torch.zeros(prompt_frames + frames, normalizer.rest_channels)
        if encoded.content is not None:
            n = min(encoded.frames, frames)
            mouth[prompt_frames : prompt_frames + n] = encoded.content[:n]
            rest[prompt_frames:] = fit_frames(encoded.cond, frames, normalizer.rest_channels)
        else:
            idle = self._idle(encoded.state, frames)
            if idle is not None:
                rest[prompt_frames:] = idle
        return StreamTrack(mouth, torch.zeros(prompt_frames + frames, dtype=torch.bool), rest)

    def _idle(self, state: Mapping[str, Any], frames: int) -> torch.Tensor | None:
        """The normalised e_rest of the idle face over ``frames`` frames, or None (the mean face)."""
        normalizer = self.normalizer
        neutral = normalizer.denormalize(torch.zeros(normalizer.mouth_channels), torch.zeros(normalizer.rest_channels))
        try:
            exp = idle_track(state["idle"], frames, state["seed"], self.spec.frame_rate, neutral.numpy())
        except ValueError as error:
            raise InputError(str(error)) from error
        if exp is None:
            return None
        return normalizer.normalize(torch.from_numpy(exp))[1].float()

    # ------------------------------------------------------------------------------------------ decode

    def decode(self, latent: torch.Tensor, cond, encoded: EncodedStream, progress: bool = False) -> dict[str, Any]:
        exp = self.normalizer.denormalize(latent.float().cpu(), cond.float().cpu()).numpy()
        out: dict[str, Any] = {"motion": exp}
        renderer = encoded.state.get("renderer")
        pose = encoded.state.get("pose")
        if pose is not None:
            out["head_pose"] = pose  # saved into the motion template with the expressions
        if renderer is not None:  # frames made as the writer reads them (frames.RenderedVideo): memory stays flat
            driving = self._driving(exp, pose)
            streams = hasattr(renderer, "video")
            out["video"] = renderer.video(driving, progress) if streams else renderer.render(driving, progress=progress)
        return out

    def _driving(self, exp: np.ndarray, pose: Mapping[str, np.ndarray] | None):
        """What the renderer is driven with: the expressions, with the given template's head pose when there is
        one (held at its last frame where the output is longer)."""
        if pose is None:
            return exp
        return template_from_expressions(exp, float(self.spec.frame_rate), pose)

    def output_suffixes(self, inputs: Mapping[str, Any]) -> set[str]:
        """Templates always; a video when there is something to render on (as ``encode`` builds the renderer)."""
        rendered = inputs.get("portrait") is not None or inputs.get("renderer") is not None
        return {".npz", ".pkl"} | ({".mp4"} if rendered else set())

    def save(self, outputs: Mapping[str, Any], folder: Path, stem: str) -> list[Path]:
        """``stem.npz`` and ``stem.pkl`` (LivePortrait templates, with the given template's head pose if any) and,
        with video frames, a silent ``stem.mp4`` (frames rendered and encoded one batch at a time)."""
        from .video import write_video

        exp = outputs["motion"]
        template = template_from_expressions(exp, float(self.spec.frame_rate), outputs.get("head_pose"))
        written = [save_motion_template(template, Path(folder) / f"{stem}.{kind}") for kind in ("npz", "pkl")]
        if outputs.get("video") is not None:
            written.append(write_video(Path(folder) / f"{stem}.mp4", outputs["video"], float(self.spec.frame_rate)))
        return written
