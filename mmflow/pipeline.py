"""``MMFlowPipeline``: every registered task of any ``MMDiT`` whose streams are registered, with no task code.

A call runs ``check_inputs → encode (per stream) → timelines → sample → decode (per stream)``:

- the ``TaskPreset`` says which streams are generated, given or absent, and (with the streams' codecs) which
  user inputs the task requires or accepts;
- each stream's codec (``mmflow.codecs``) turns the inputs into its part of a ``Timeline``: an optional prompt
  (given), then the main part, given or to generate; the main part lasts the same seconds in every stream, set
  by ``duration=``, by the given streams, or by a codec's estimate;
- ``LongFormSampler`` samples the timelines (in overlapping windows when longer than ``max_seconds``);
- each codec decodes its stream's generated main part (``decode``) and writes files (``save``).

Subclasses (e.g. ``JAMFlowPipeline``) add components their codecs use; the task logic stays here.
"""

from __future__ import annotations

import logging
import numbers
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput

from .codecs import EncodedStream, InputError, StreamCodec, TensorCodec
from .flow import Guidance
from .long_form import LongFormSampler, StreamTrack, Timeline
from .plugins import get_registry
from .scheduler import FlowMatchingScheduler
from .tasks import TaskInput, TaskPreset, regenerate_spans
from .transformer import MMDiT

logger = logging.getLogger(__name__)

MAX_PROMPTS = 256


@dataclass
class MMFlowOutput(BaseOutput):
    """Per prompt: ``outputs[i]`` the decoded outputs of every stream of the task (codec names to values) and
    ``latents[i]`` each stream's latent main part ``(frames, channels)``; ``sources`` names the stream that
    decoded each output."""

    outputs: list[dict[str, Any]]
    latents: list[dict[str, torch.Tensor]]
    sources: dict[str, str]


class MMFlowPipeline(DiffusionPipeline):
    """Generation for any ``MMDiT`` with registered streams and tasks.

    Args:
        transformer: The model.
        scheduler: Steps, sway and solver (``FlowMatchingScheduler``).
        max_seconds: Longest window the model samples at once (its training length); longer timelines are cut
            into overlapping windows.
    """

    model_cpu_offload_seq = "transformer"

    def __init__(self, transformer: MMDiT, scheduler: FlowMatchingScheduler, max_seconds: float = 30.0):
        super().__init__()
        self.register_modules(transformer=transformer, scheduler=scheduler)
        self.register_to_config(max_seconds=float(max_seconds))

    # ------------------------------------------------------------------------------------------ declarations

    @property
    def stream_names(self) -> list[str]:
        return list(self.transformer.stream_names)

    def codec(self, stream: str) -> StreamCodec:
        """The codec of one of the model's streams: its plugin's registered one, else ``TensorCodec``."""
        cache = self.__dict__.setdefault("_codecs", {})
        if stream not in cache:
            spec = self.transformer.stream_spec(stream)
            factory = get_registry().stream_codec(self.transformer.stream_kinds.get(stream, stream))
            cache[stream] = factory(spec, self) if factory is not None else TensorCodec(spec, self)
        return cache[stream]

    @property
    def tasks(self) -> dict[str, TaskPreset]:
        """The registered tasks this model can run (every stream they name is one of the model's)."""
        names = set(self.stream_names)
        return {name: task for name, task in get_registry().tasks.items()
                if {*task.generate, *task.given, *task.absent} <= names}

    def task(self, name: str | TaskPreset) -> TaskPreset:
        if isinstance(name, TaskPreset):
            name.check_streams(self.stream_names)
            return name
        tasks = self.tasks
        if name not in tasks:
            raise InputError(f"unknown task {name!r} for this model; choose one of {sorted(tasks)} (`mmflow tasks`)")
        return tasks[name]

    def task_inputs(self, task: str | TaskPreset) -> tuple[TaskInput, ...]:
        """Every user input of ``task``: its own, then each present stream's for its role (one entry per name)."""
        task = self.task(task)
        merged: dict[str, TaskInput] = {item.name: item for item in task.inputs}
        for stream in self.stream_names:
            role = self._role(task, stream)
            if role == "absent":
                continue
            for item in self.codec(stream).inputs(role):
                known = merged.get(item.name)
                if known is None:
                    merged[item.name] = item
                elif item.required and not known.required:
                    merged[item.name] = TaskInput(known.name, known.description, True)
        return tuple(merged.values())

    @classmethod
    def cli_main(cls, argv: list[str], folder) -> int:
        """``mmflow generate`` for a saved folder of this class (``mmflow.generate_command``)."""
        from .generate_command import generic_cli_main

        return generic_cli_main(cls, argv, folder)

    # ------------------------------------------------------------------------------------------ call

    def check_inputs(self, task: TaskPreset, inputs: Mapping[str, Any], spans) -> list[dict[str, Any]]:
        """The inputs of each prompt; refuses unknown and missing inputs, naming the task's inputs."""
        declared = {item.name: item for item in self.task_inputs(task)}
        listing = "; ".join(f"{i.name}{'' if i.required else ' (optional)'}: {i.description}"
                            for i in declared.values()) or "none"
        unknown = sorted(set(inputs) - set(declared))
        if unknown:
            raise InputError(f"task {task.name!r} takes no input(s) {unknown}; it takes {listing}")
        if spans is not None:
            if not task.editable:
                raise InputError(f"spans= are for editing tasks; task {task.name!r} regenerates whole streams")
            bad = sorted(set(spans) - set(task.generate))
            if bad:
                raise InputError(f"spans name stream(s) {bad} that task {task.name!r} does not generate "
                                 f"({list(task.generate)})")
        counts = {len(v) for v in inputs.values() if isinstance(v, list | tuple)}
        if len(counts) > 1:
            raise InputError(f"inputs given as lists must all have one entry per prompt; got lengths {sorted(counts)}")
        count = counts.pop() if counts else 1
        if not 1 <= count <= MAX_PROMPTS:
            raise InputError(f"between 1 and {MAX_PROMPTS} prompts per call, got {count}")
        prompts = [{name: (value[i] if isinstance(value, list | tuple) else value) for name, value in inputs.items()}
                   for i in range(count)]
        for i, prompt in enumerate(prompts):
            missing = [name for name, item in declared.items() if item.required and prompt.get(name) is None]
            if missing:
                raise InputError(f"task {task.name!r} needs {missing} (prompt {i}); it takes {listing}")
        return prompts

    @torch.no_grad()
    def __call__(
        self,
        task: str | TaskPreset,
        *,
        num_inference_steps: int | None = None,
        guidance_scale: float | Mapping[str, float] = 0.0,
        uncond_joint_view: Mapping[str, bool] | None = None,
        joint_attention: bool = True,
        spans: Mapping[str, Sequence[tuple[float, float]]] | None = None,
        duration: float | None = None,
        seed: int | Sequence[int] = 0,
        output_type: str = "np",
        progress: bool = True,
        **inputs,
    ) -> MMFlowOutput:
        """Run ``task`` on one prompt, or on a batch when inputs are lists (one entry per prompt).

        Args:
            task: A task name (``pipe.tasks``) or a ``TaskPreset``.
            num_inference_steps: Solver steps (default: the scheduler's).
            guidance_scale: Classifier-free guidance, one scale for every generated stream or one per stream.
            uncond_joint_view: Per stream joint view in the unconditional pass (False: ignore the other streams).
            joint_attention: False runs every stream with its joint view off (the no-coupling ablation).
            spans: Editing tasks: per generated stream, ``(start, end)`` seconds of the main part to regenerate.
            duration: Seconds of the main part; default: the given streams' length, else the codecs' estimate.
            seed: Noise seed; prompt i uses ``seed + i`` (or one seed per prompt).
            output_type: ``"np"`` (decoded outputs) or ``"latent"`` (latents only).
            progress: Progress bars.
            **inputs: The task's inputs (``pipe.task_inputs(task)``, ``mmflow tasks``).
        """
        task = self.task(task)
        if output_type not in ("np", "latent"):
            raise InputError(f"output_type must be 'np' or 'latent', got {output_type!r}")
        if duration is not None and not (isinstance(duration, numbers.Real) and 0 < duration <= 3600):
            raise InputError(f"duration must be a number of seconds in (0, 3600], got {duration!r}")
        prompts = self.check_inputs(task, inputs, spans)
        seeds = self._seeds(seed, len(prompts))
        present = [n for n in self.stream_names if task.role(n) != "absent"]
        encoded = [{n: self.codec(n).encode({k: v for k, v in prompt.items() if k in self._names(n, task)},
                                            self._role(task, n)) for n in present} for prompt in prompts]
        timelines, prompt_frames = [], []
        for i, streams in enumerate(encoded):
            timeline, offsets = self._timeline(task, streams, spans, duration, seeds[i])
            timelines.append(timeline)
            prompt_frames.append(offsets)
        results = self._sample(task, timelines, num_inference_steps, guidance_scale, uncond_joint_view,
                               joint_attention, progress)
        latents = [{n: result[n][offsets[n]:] for n in present} for result, offsets in zip(results, prompt_frames,
                                                                                          strict=True)]
        outputs, sources = [], {}
        if output_type == "np":
            for latent, streams in zip(latents, encoded, strict=True):
                decoded = {}
                for name in present:
                    for key, value in self.codec(name).decode(latent[name], streams[name]).items():
                        if sources.setdefault(key, name) != name:
                            raise RuntimeError(f"streams {sources[key]!r} and {name!r} both decode an output {key!r}")
                        decoded[key] = value
                outputs.append(decoded)
        return MMFlowOutput(outputs=outputs, latents=latents, sources=sources)

    def save(self, output: MMFlowOutput, folder: str | os.PathLike, stem: str = "sample") -> list[Path]:
        """Write every prompt's outputs with the streams' codecs (``stem``, ``stem_1``... for batches)."""
        written = []
        for i, decoded in enumerate(output.outputs):
            name = stem if len(output.outputs) == 1 else f"{stem}_{i}"
            for stream in self.stream_names:
                mine = {key: value for key, value in decoded.items() if output.sources[key] == stream}
                if mine:
                    written += self.codec(stream).save(mine, Path(folder), name)
        return written

    # ------------------------------------------------------------------------------------------ steps

    @staticmethod
    def _role(task: TaskPreset, stream: str) -> str:
        """The role a codec sees: ``given``, ``generate``, ``absent``, or ``edit`` (generated where spans say, so
        the stream's current values are an input)."""
        role = task.role(stream)
        return "edit" if role == "generate" and task.editable else role

    def _names(self, stream: str, task: TaskPreset) -> set[str]:
        return {item.name for item in self.codec(stream).inputs(self._role(task, stream))}

    @staticmethod
    def _seeds(seed, count: int) -> list[int]:
        if isinstance(seed, numbers.Integral):
            return [int(seed) + i for i in range(count)]
        seeds = [int(s) for s in seed]
        if len(seeds) != count:
            raise InputError(f"seed has {len(seeds)} entries but there are {count} prompts")
        return seeds

    def _main_seconds(self, task: TaskPreset, streams: Mapping[str, EncodedStream], duration) -> Fraction:
        """How long the main part lasts: ``duration``, else the given streams (which must agree), else estimates."""
        specs = {n: self.transformer.stream_spec(n) for n in streams}
        if duration is not None:
            return Fraction(duration).limit_denominator(100_000)
        known = {n: Fraction(e.frames) / specs[n].frame_rate for n, e in streams.items() if e.frames}
        if known:
            longest, shortest = max(known.values()), min(known.values())
            slowest = min(spec.frame_rate for spec in specs.values())
            if (longest - shortest) * slowest > 1:
                lengths = {n: f"{float(s):.2f} s" for n, s in known.items()}
                raise InputError(f"the given streams last different times {lengths}; give inputs of one duration")
            return longest
        estimates = {n: Fraction(e.estimate) / specs[n].frame_rate for n, e in streams.items() if e.estimate}
        if estimates:
            return max(estimates.values())
        raise InputError(f"task {task.name!r} cannot tell how long to generate from these inputs: pass duration= "
                         f"(seconds)")

    def _timeline(self, task, streams: Mapping[str, EncodedStream], spans, duration, seed):
        """One prompt's ``Timeline`` and, per stream, where its main part starts."""
        model = self.transformer
        specs = {n: model.stream_spec(n) for n in model.stream_names}
        prompt_seconds = max((Fraction(e.prompt_frames) / specs[n].frame_rate for n, e in streams.items()),
                             default=Fraction(0))
        total = prompt_seconds + self._main_seconds(task, streams, duration)
        tracks, offsets = {}, {}
        for name, spec in specs.items():
            encoded = streams.get(name)
            first = encoded.prompt_frames if encoded is not None and encoded.prompt is not None \
                else spec.num_frames(prompt_seconds)
            frames = max(spec.num_frames(total) - first, 1)
            offsets[name] = first
            if encoded is None:  # absent: nothing sampled; zeros, all given
                cond = torch.zeros(first + frames, spec.cond_channels) if spec.cond_channels else None
                tracks[name] = StreamTrack(torch.zeros(first + frames, spec.channels),
                                           torch.ones(first + frames, dtype=torch.bool), cond)
                continue
            track = self.codec(name).fit(encoded, first, frames)
            role = task.role(name)
            given = track.given.clone()
            if role == "given":
                given[first:] = True
            elif spans and name in spans:
                if encoded.content is None:
                    raise InputError(f"editing stream {name!r} needs its current values to keep outside the spans: "
                                     f"pass them ({', '.join(sorted(self._names(name, task)))})")
                given[first:] = True
                try:
                    given = regenerate_spans(given, spec, spans[name], offset=first)
                except ValueError as error:
                    raise InputError(str(error)) from error
            tracks[name] = StreamTrack(track.latent, given, track.cond, track.frame_extras, track.extras)
        device, dtype = model.device, model.dtype
        tracks = {n: _to(t, device, dtype) for n, t in tracks.items()}
        return Timeline(tracks, seed=seed), offsets

    def _sample(self, task, timelines, steps, guidance_scale, uncond_joint_view, joint_attention, progress):
        scheduler = self.scheduler
        if steps is not None:  # a copy: the pipeline's scheduler keeps its configured steps
            if not (isinstance(steps, numbers.Integral) and 1 <= steps <= 1000):
                raise InputError(f"num_inference_steps must be an integer in [1, 1000], got {steps!r}")
            scheduler = FlowMatchingScheduler.from_config(self.scheduler.config)
            scheduler.set_timesteps(int(steps))
        generated = [n for n in self.stream_names if task.role(n) == "generate"]
        if isinstance(guidance_scale, Mapping):
            scales = {n: float(s) for n, s in guidance_scale.items()}
            unknown = sorted(set(scales) - set(generated))
            if unknown:
                raise InputError(f"guidance_scale names stream(s) {unknown}; task {task.name!r} generates {generated}")
        else:
            scales = {n: float(guidance_scale) for n in generated}
        bad = {n: s for n, s in scales.items() if not 0 <= s <= 100}
        if bad:
            raise InputError(f"guidance_scale must lie in [0, 100], got {bad}")
        guidance = Guidance(scales=scales, joint_view=dict(uncond_joint_view or {}))
        max_seconds = self.config.max_seconds
        sampler = LongFormSampler(self.transformer, max_seconds, context_seconds=min(2.0, max_seconds / 3))
        absent = tuple(n for n in self.stream_names if task.role(n) == "absent")
        return sampler(timelines, progress=progress, guidance=guidance if guidance.enabled else None,
                       scheduler=scheduler, joint_view=bool(joint_attention), absent=absent)


def _to(track: StreamTrack, device, dtype) -> StreamTrack:
    return StreamTrack(
        track.latent.to(device, dtype),
        track.given.to(device),
        None if track.cond is None else track.cond.to(device, dtype),
        {k: v.to(device) for k, v in track.frame_extras.items()},
        {k: v.to(device) for k, v in track.extras.items()},
    )
