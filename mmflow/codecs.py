"""Stream codecs: how a user's inputs become one stream's part of a timeline, and its latent becomes outputs.

A pipeline knows no modality. For each stream of a task it asks the stream's codec (registered by the stream's
plugin through ``mmflow_stream_codecs``) to

1. ``encode`` the user inputs the codec declares (``inputs(role)``) into an ``EncodedStream``: the given content
   (or none), its per-frame condition, an optional prompt that comes before it (a reference voice), and how long
   the stream wants to be when nothing else says so (e.g. from text);
2. optionally ``split`` it into consecutive pieces sampled one after another (F5-TTS's sentence chunks, for text
   conditioning that cannot be cut into windows);
3. ``fit`` each piece to the frames the pipeline settled on (the same seconds in every stream) as a
   ``StreamTrack``;
4. ``decode`` the generated latent (the part after the prompt) with its condition into outputs (arrays, a
   waveform, a video...), and ``save`` those to files. A codec may also say which file suffixes ``save`` will
   write for given inputs, before anything runs (optional ``output_suffixes(inputs) -> set[str]``, e.g.
   ``{".wav"}``; ``MMFlowPipeline.output_suffixes`` collects them, so ``mmflow evaluate`` refuses an unfed metric
   before generating).

Streams without a registered codec get ``TensorCodec``: arrays of latent frames in, arrays out.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from .io import atomic_path
from .long_form import StreamTrack
from .streams import StreamSpec
from .tasks import TaskInput


class InputError(ValueError):
    """A task was called without an input it needs, with an input it does not take, or with a bad value."""


@dataclass
class EncodedStream:
    """One stream's part of one prompt before the timeline's length is known.

    Args:
        content: ``(n, c)`` latent values of the main part (given content, or context to edit), or None.
        cond: ``(n, k)`` per-frame condition of the main part, or None (zeros, or ``neutral_cond``).
        prompt: ``(p, c)`` latent frames given before the main part (e.g. a reference voice), or None.
        prompt_cond: ``(p, k)`` condition of the prompt frames.
        frames: The main part's length in this stream's frames when the stream knows it (its content), else None.
        estimate: A length estimate in frames when nothing is given (e.g. speech from text), else None.
        state: Whatever the codec needs again in ``fit`` and ``decode`` (text, loudness, file names...).
    """

    content: torch.Tensor | None = None
    cond: torch.Tensor | None = None
    prompt: torch.Tensor | None = None
    prompt_cond: torch.Tensor | None = None
    frames: int | None = None
    estimate: int | None = None
    state: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.frames is None and self.content is not None:
            self.frames = int(self.content.shape[0])

    @property
    def prompt_frames(self) -> int:
        return 0 if self.prompt is None else int(self.prompt.shape[0])


@runtime_checkable
class StreamCodec(Protocol):
    """What a stream plugin provides so that any pipeline can run its stream (see the module docstring)."""

    def inputs(self, role: str) -> tuple[TaskInput, ...]:
        """The user inputs this stream reads in a task's ``role`` for it: ``given`` (given whole), ``generate``
        (generated whole) or ``edit`` (generated inside the call's spans, kept elsewhere)."""

    def encode(self, inputs: Mapping[str, Any], role: str, seed: int) -> EncodedStream:
        """Turn the inputs (only those declared by ``inputs(role)`` are passed) into an ``EncodedStream``;
        ``seed`` is the prompt's, for anything the codec draws at random."""

    def fit(self, encoded: EncodedStream, prompt_frames: int, frames: int) -> StreamTrack:
        """The stream's track: ``prompt_frames`` prompt frames (given) then ``frames`` main frames. The pipeline
        sets ``given`` on the main part from the task; the track's ``given`` marks the prompt."""

    def decode(self, latent: torch.Tensor, cond: torch.Tensor | None, encoded: EncodedStream,
               progress: bool = False) -> dict[str, Any]:
        """Outputs of the generated main part ``(frames, c)`` and its condition: names to values."""

    def save(self, outputs: Mapping[str, Any], folder: Path, stem: str) -> list[Path]:
        """Write ``decode``'s outputs as files ``folder/stem.*``; returns the paths written."""


def fit_frames(values: torch.Tensor | None, frames: int, channels: int, hold: bool = True) -> torch.Tensor:
    """``values`` cut or extended to ``frames`` rows (the last row held, or zeros), zeros when None."""
    if values is None:
        return torch.zeros(frames, channels)
    values = values[:frames]
    if values.shape[0] < frames:
        tail = values[-1:].expand(frames - values.shape[0], -1) if hold and values.shape[0] else \
            values.new_zeros(frames - values.shape[0], values.shape[1])
        values = torch.cat([values, tail])
    return values


class TensorCodec:
    """The default codec: a stream's frames as arrays ``(frames, channels)`` at the stream's rate.

    Inputs: ``<stream>`` (the stream's values; required when the stream is given or edited) and
    ``<stream>_cond`` (the per-frame condition; required when the stream has one).
    Outputs: ``{<stream>: array}``, saved as ``<stem>.<stream>.npy``.
    """

    def __init__(self, spec: StreamSpec, pipeline=None):
        self.spec = spec

    def inputs(self, role: str) -> tuple[TaskInput, ...]:
        name, spec = self.spec.name, self.spec
        shape = f"an array (frames, {spec.channels}) at {float(spec.frame_rate):g} frames/s"
        declared = []
        if role == "given":
            declared.append(TaskInput(name, f"the {name} stream, {shape}", required=True))
        elif role == "edit":
            declared.append(TaskInput(name, f"the {name} stream to edit (kept outside the spans), {shape}", True))
        if spec.cond_channels:
            declared.append(TaskInput(f"{name}_cond", f"the per-frame condition of {name}, an array (frames, "
                                      f"{spec.cond_channels})", required=True))
        return tuple(declared)

    def _array(self, value, what: str, channels: int) -> torch.Tensor:
        array = torch.as_tensor(np.load(value) if isinstance(value, str | os.PathLike) else value, dtype=torch.float32)
        if array.ndim != 2 or array.shape[1] != channels or array.shape[0] == 0:
            raise InputError(f"{what} must be an array (frames, {channels}) with at least one frame, "
                             f"got shape {tuple(array.shape)}")
        if not torch.isfinite(array).all():
            raise InputError(f"{what} contains NaN or infinite values")
        return array

    def encode(self, inputs: Mapping[str, Any], role: str, seed: int = 0) -> EncodedStream:
        name, spec = self.spec.name, self.spec
        content = None if inputs.get(name) is None else self._array(inputs[name], name, spec.channels)
        cond = None
        if spec.cond_channels:
            cond = self._array(inputs[f"{name}_cond"], f"{name}_cond", spec.cond_channels)
        frames = None if content is None else content.shape[0]
        if frames is None and cond is not None:
            frames = cond.shape[0]
        return EncodedStream(content=content, cond=cond, frames=frames)

    def fit(self, encoded: EncodedStream, prompt_frames: int, frames: int) -> StreamTrack:
        spec = self.spec
        latent = torch.cat([fit_frames(encoded.prompt, prompt_frames, spec.channels),
                            fit_frames(encoded.content, frames, spec.channels, hold=False)])
        given = torch.zeros(prompt_frames + frames, dtype=torch.bool)
        given[:prompt_frames] = encoded.prompt is not None
        cond = None
        if spec.cond_channels:
            cond = torch.cat([fit_frames(encoded.prompt_cond, prompt_frames, spec.cond_channels),
                              fit_frames(encoded.cond, frames, spec.cond_channels)])
        return StreamTrack(latent, given, cond)

    def decode(self, latent: torch.Tensor, cond: torch.Tensor | None, encoded: EncodedStream,
               progress: bool = False) -> dict[str, Any]:
        return {self.spec.name: latent.float().cpu().numpy()}

    def output_suffixes(self, inputs: Mapping[str, Any]) -> set[str]:
        return {".npy"}

    def save(self, outputs: Mapping[str, Any], folder: Path, stem: str) -> list[Path]:
        written = []
        for key, value in outputs.items():
            path = Path(folder) / f"{stem}.{key}.npy"
            with atomic_path(path) as tmp:
                np.save(tmp, np.asarray(value))
            written.append(path)
        return written
