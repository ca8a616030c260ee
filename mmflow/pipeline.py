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
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput

from .codecs import EncodedStream, InputError, StreamCodec, TensorCodec
from .flow import Guidance, seeded_noise
from .hub import resolve_pretrained
from .long_form import LongFormSampler, StreamTrack, Timeline
from .lora_loading import MMFlowLoraLoaderMixin
from .model_folder import check_model_folder
from .plugins import get_registry
from .scheduler import FlowMatchingScheduler
from .tasks import TaskInput, TaskPreset, declared_inputs, regenerate_spans
from .transformer import MMDiT
from .validation import WINDOW, check_call_arguments

logger = logging.getLogger(__name__)

MAX_PROMPTS = 256
PER_PROMPT = re.compile(r"num_\w+_per_prompt")
"""diffusers' ``num_images_per_prompt``-style knobs: refused by name (a batch is lists of inputs here)."""
PIECE_FADE_SECONDS = Fraction(4, 25)
"""Cross-fade between consecutive pieces of a split prompt (see ``StreamCodec.split``)."""


@dataclass
class MMFlowOutput(BaseOutput):
    """Per prompt: ``outputs[i]`` the decoded outputs of every stream of the task (codec names to values),
    ``latents[i]`` each stream's latent main part ``(frames, channels)`` and ``conds[i]`` its condition (or None);
    ``sources`` names the stream that decoded each output."""

    outputs: list[dict[str, Any]]
    latents: list[dict[str, torch.Tensor]]
    conds: list[dict[str, torch.Tensor | None]]
    sources: dict[str, str]


class MMFlowPipeline(DiffusionPipeline, MMFlowLoraLoaderMixin):
    """Generation for any ``MMDiT`` with registered streams and tasks.

    Args:
        transformer: The model.
        scheduler: Steps, sway and solver (``FlowMatchingScheduler``).
        max_seconds: Longest window the model samples at once (its training length); longer timelines are cut
            into overlapping windows.
    """

    model_cpu_offload_seq = "transformer"
    _callback_tensor_inputs = ["latents"]

    def __init__(self, transformer: MMDiT, scheduler: FlowMatchingScheduler, max_seconds: float = 30.0):
        super().__init__()
        self.register_modules(transformer=transformer, scheduler=scheduler)
        self.register_to_config(max_seconds=WINDOW.check("max_seconds (the model's window)", max_seconds))

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
        return declared_inputs(self.task(task), self.stream_names, self.codec)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """Load a saved folder, or a Hub id (``org/name``) from the local Hugging Face cache (``mmflow.hub``; never
        downloaded), after checking it (``mmflow.model_folder``): only installed mmflow plugins' modules,
        readable weights, every component present. Code from a folder is never run: ``trust_remote_code`` and
        ``custom_pipeline`` are refused."""
        remote = [name for name in ("trust_remote_code", "custom_pipeline") if kwargs.get(name)]
        if remote:
            raise InputError(f"{', '.join(f'{n}=' for n in remote)}: mmflow never runs code from a model folder; "
                             f"pipelines and components come from installed mmflow plugins (`mmflow plugins`)")
        folder = resolve_pretrained(pretrained_model_name_or_path, kwargs.get("revision"), kwargs.get("cache_dir"))
        check_model_folder(folder)
        return super().from_pretrained(folder, **kwargs)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """diffusers' ``save_pretrained``, without the local path a loaded pipeline remembers (``_name_or_path``):
        a ``model_index.json`` names modules and classes only."""
        from diffusers.configuration_utils import FrozenDict

        config = self._internal_dict
        self._internal_dict = FrozenDict({k: v for k, v in config.items() if k != "_name_or_path"})
        try:
            return super().save_pretrained(save_directory, *args, **kwargs)
        finally:
            self._internal_dict = config

    @classmethod
    def extract_init_dict(cls, config_dict, **kwargs):
        """diffusers reads ``model_index.json`` through here (in this class's ``from_pretrained`` and in
        ``DiffusionPipeline.from_pretrained``): every component module is checked to be mmflow's or an installed
        plugin's, and registered for diffusers to import, before any component loads (``mmflow.diffusers_compat``)."""
        from .diffusers_compat import allow_component_modules

        allow_component_modules(config_dict)
        return super().extract_init_dict(config_dict, **kwargs)

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
        counts = {len(v) for v in inputs.values() if isinstance(v, list | tuple)}
        if len(counts) > 1:
            raise InputError(f"inputs given as lists must all have one entry per prompt; got lengths {sorted(counts)}")
        count = counts.pop() if counts else 1
        if not 1 <= count <= MAX_PROMPTS:
            raise InputError(f"between 1 and {MAX_PROMPTS} prompts per call, got {count}")
        prompts = [{name: (value[i] if isinstance(value, list | tuple) else value) for name, value in inputs.items()}
                   for i in range(count)]
        for i, prompt in enumerate(prompts):
            missing = [item for item in declared.values() if item.required and prompt.get(item.name) is None]
            if missing:
                needs = ", ".join(f"{item.name}= ({item.description})" for item in missing)
                raise InputError(f"task {task.name!r} needs {needs} for prompt {i}; it takes: {listing}")
        unknown = sorted(set(inputs) - set(declared))
        if unknown:
            raise InputError(f"task {task.name!r} takes no {', '.join(f'{n}=' for n in unknown)}; it takes: {listing}")
        if task.editable and not any((spans or {}).values()):
            raise InputError(f"task {task.name!r} regenerates time spans: pass spans={{stream: [(start, end), ...]}} "
                             f"for some of {list(task.generate)}")
        if spans is not None:
            if not task.editable:
                raise InputError(f"spans= are for editing tasks; task {task.name!r} regenerates whole streams")
            unknown = sorted(set(spans) - set(self.stream_names))
            if unknown:
                raise InputError(f"spans name unknown stream(s) {unknown}; this model has {self.stream_names}")
            bad = sorted(set(spans) - set(task.generate))
            if bad:
                raise InputError(f"spans name stream(s) {bad} that task {task.name!r} does not generate "
                                 f"({list(task.generate)})")
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
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
        latents: Mapping[str, torch.Tensor] | Sequence[Mapping[str, torch.Tensor]] | None = None,
        sway_coefficient: float | None = None,
        cross_fade: float | None = None,
        output_type: str = "np",
        return_dict: bool = True,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
        progress: bool = True,
        **inputs,
    ) -> MMFlowOutput | tuple:
        """Run ``task`` on one prompt, or on a batch when inputs are lists (one entry per prompt).

        Args:
            task: A task name (``pipe.tasks``) or a ``TaskPreset``.
            num_inference_steps: Solver steps (default: the scheduler's).
            guidance_scale: Classifier-free guidance, one scale for every stream of the task or one per stream.
            uncond_joint_view: Per stream joint view in the unconditional pass (False: ignore the other streams).
            joint_attention: False runs every stream with its joint view off (the no-coupling ablation).
            spans: Editing tasks: per generated stream, ``(start, end)`` seconds of the main part to regenerate.
            duration: Seconds of the main part; default: the given streams' length, else the codecs' estimate.
            seed: Noise seed; prompt i uses ``seed + i`` (or one seed per prompt).
            generator: diffusers' way instead of ``seed``: a ``torch.Generator`` (each prompt's seed is drawn from
                it) or one per prompt.
            latents: The starting noise instead of the seed's: per stream the task samples, ``(frames, channels)``
                over the prompt's whole timeline (its prompt part, then the main part), as ``prepare_latents``
                returns it; for a batch one such mapping per prompt, or ``(prompts, frames, channels)`` tensors.
                A timeline longer than ``max_seconds`` starts each window from its frames of it.
            sway_coefficient: Sway sampling for this call (default: the scheduler's; F5-TTS's ``sway_sampling_coef``).
            cross_fade: Seconds of cross-fade between the pieces of a split prompt (default 0.16; F5-TTS's
                ``cross_fade_duration``).
            output_type: ``"np"`` (decoded outputs) or ``"latent"`` (latents only).
            return_dict: False returns the tuple ``(outputs, latents)`` instead of an ``MMFlowOutput``.
            callback_on_step_end: ``callback(pipe, step_index, timestep, callback_kwargs) -> dict`` after every
                solver step, diffusers' convention: ``callback_kwargs["latents"]`` is ``{stream: (rows, frames,
                channels)}``, the state after the step (one row per prompt, or per piece of a split prompt, padded
                to the longest); a ``"latents"`` entry in the returned dict replaces it. ``step_index`` counts the
                steps of the current window from 0 (``pipe.window_index``: which window of a long timeline; every
                window runs all ``pipe.num_timesteps`` steps); ``timestep`` is the flow time the step started at
                (``scheduler.timesteps[step_index]`` for Euler). diffusers' ``PipelineCallback`` objects work too.
            callback_on_step_end_tensor_inputs: The tensors passed in ``callback_kwargs`` (of
                ``pipe._callback_tensor_inputs``).
            progress: Progress bars (also off after ``set_progress_bar_config(disable=True)``).
            **inputs: The task's inputs (``pipe.task_inputs(task)``, ``mmflow tasks``).
        """
        task = self.task(task)
        if output_type not in ("np", "latent"):
            raise InputError(f"output_type must be 'np' or 'latent', got {output_type!r}")
        check_call_arguments(duration=duration, num_inference_steps=num_inference_steps,
                             guidance_scale=guidance_scale, seed=seed, spans=spans, sway_coefficient=sway_coefficient,
                             cross_fade=cross_fade)
        step_callback = self._step_callback(callback_on_step_end, callback_on_step_end_tensor_inputs)
        fade = PIECE_FADE_SECONDS if cross_fade is None else Fraction(cross_fade).limit_denominator(10_000)
        progress = progress and not getattr(self, "_progress_bar_config", {}).get("disable", False)
        present, encoded, timelines = self._plan(task, inputs, spans, duration, seed, generator)
        if latents is not None:
            timelines = self._with_latents(timelines, latents, present)
        results = iter(self._sample(task, [t for group in timelines for t, _ in group], num_inference_steps,
                                    sway_coefficient, guidance_scale, uncond_joint_view, joint_attention, progress,
                                    step_callback))
        latents, conds = [], []
        for group in timelines:
            pieces = [(next(results), timeline, offsets) for timeline, offsets in group]
            latents.append({n: self._join([r[n][o[n]:] for r, _, o in pieces], n, fade) for n in present})
            conds.append({n: None if pieces[0][1].tracks[n].cond is None
                          else self._join([t.tracks[n].cond[o[n]:] for _, t, o in pieces], n, fade) for n in present})
        outputs, sources = [], {}
        if output_type == "np":
            for latent, cond, streams in zip(latents, conds, encoded, strict=True):
                decoded = {}
                for name in present:
                    produced = self.codec(name).decode(latent[name], cond[name], streams[name], progress=progress)
                    for key, value in produced.items():
                        if sources.setdefault(key, name) != name:
                            raise RuntimeError(f"streams {sources[key]!r} and {name!r} both decode an output {key!r}")
                        decoded[key] = value
                outputs.append(decoded)
        if not return_dict:
            return outputs, latents
        return MMFlowOutput(outputs=outputs, latents=latents, conds=conds, sources=sources)

    def prepare_latents(self, task: str | TaskPreset, *, seed: int | Sequence[int] = 0,
                        generator: torch.Generator | Sequence[torch.Generator] | None = None,
                        duration: float | None = None, spans=None, **inputs) -> list[dict[str, torch.Tensor]]:
        """Per prompt, the starting noise ``seed`` (or ``generator``) gives a call with these inputs: per stream the
        task samples, ``(frames, channels)`` over the whole timeline. Passed back as ``latents=`` (changed or not),
        it replaces the seed's noise; unchanged, the output is the seed's, bit for bit, for a timeline sampled in
        one window (longer ones draw fresh noise per window from the seed, but take their frames of ``latents``)."""
        task = self.task(task)
        present, _, timelines = self._plan(task, inputs, spans, duration, seed, generator)
        names, noises = self.stream_names, []
        for group in self._single_pieces(timelines):
            timeline = group[0][0]
            drawn = seeded_noise(timeline.seed, [tuple(timeline.tracks[n].latent.shape) for n in names])
            noises.append({n: noise for n, noise in zip(names, drawn, strict=True) if n in present})
        return noises

    @property
    def window_index(self) -> int:
        """In ``callback_on_step_end``: which window of a timeline longer than ``max_seconds`` is sampled (0 first)."""
        return getattr(self, "_window_index", 0)

    @property
    def num_timesteps(self) -> int | None:
        """Solver steps of the last call (per window)."""
        return getattr(self, "_num_timesteps", None)

    def enable_attention_slicing(self, slice_size: str | int | None = "auto"):
        """Refused rather than silently ignored: mmflow's attention (``mmflow.attention``) runs torch's fused SDPA
        kernels (or the ``split`` backend), which never hold the whole attention matrix, so there is nothing to
        slice."""
        if slice_size is None:  # disable_attention_slicing(): nothing is sliced, nothing to undo
            return
        raise NotImplementedError(
            "enable_attention_slicing: mmflow's attention already runs fused SDPA kernels that never hold the whole "
            "attention matrix (mmflow.attention); for less memory use enable_model_cpu_offload(), a bfloat16 "
            "transformer, or a smaller max_seconds (longer inputs are sampled in overlapping windows)")

    def enable_xformers_memory_efficient_attention(self, attention_op=None):
        """Refused rather than silently ignored (see ``enable_attention_slicing``)."""
        raise NotImplementedError(
            "enable_xformers_memory_efficient_attention: mmflow's attention runs torch's fused SDPA kernels "
            "(mmflow.attention picks the backend); xformers is not used")

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

    def output_suffixes(self, task: str | TaskPreset, inputs: Mapping[str, Any]) -> set[str] | None:
        """The file suffixes ``save`` writes for a call of ``task`` with ``inputs``, known before generating: the
        present streams' codecs' ``output_suffixes`` of the inputs each reads; None if a codec does not say."""
        task = self.task(task)
        suffixes: set[str] = set()
        for name in (n for n in self.stream_names if task.role(n) != "absent"):
            declare = getattr(self.codec(name), "output_suffixes", None)
            if declare is None:
                return None
            suffixes |= set(declare({k: v for k, v in inputs.items() if k in self._names(name, task)}))
        return suffixes

    # ------------------------------------------------------------------------------------------ steps

    def _plan(self, task: TaskPreset, inputs, spans, duration, seed, generator):
        """The present streams, each prompt's encoded streams and its timelines (one per piece, with the frame where
        each stream's main part starts)."""
        refused = sorted(name for name in inputs if PER_PROMPT.fullmatch(name))
        if refused:
            raise InputError(f"{', '.join(f'{n}=' for n in refused)}: not supported; give the inputs as lists, one "
                             f"entry per prompt (repeat a prompt for several samples: prompt i uses seed + i)")
        prompts = self.check_inputs(task, inputs, spans)
        seeds = self._seeds(seed, len(prompts)) if generator is None else self._generator_seeds(generator, len(prompts))
        present = [n for n in self.stream_names if task.role(n) != "absent"]
        encoded = [{n: self.codec(n).encode({k: v for k, v in prompt.items() if k in self._names(n, task)},
                                            task.codec_role(n), prompt_seed) for n in present}
                   for prompt, prompt_seed in zip(prompts, seeds, strict=True)]
        groups = [self._pieces(streams, duration) for streams in encoded]
        timelines = [[self._timeline(task, piece, spans, duration, seeds[i] + k) for k, piece in enumerate(group)]
                     for i, group in enumerate(groups)]
        return present, encoded, timelines

    @staticmethod
    def _single_pieces(timelines):
        for i, group in enumerate(timelines):
            if len(group) > 1:
                raise InputError(f"latents= needs each prompt sampled as one piece, but prompt {i} is split into "
                                 f"{len(group)} pieces (a long text); call without latents=, or with shorter text")
        return timelines

    def _with_latents(self, timelines, latents, present: list[str]):
        """The timelines with ``latents`` (``__call__``'s argument) as their starting noise, shapes checked."""
        count = len(timelines)
        if isinstance(latents, Mapping):
            batched = any(torch.is_tensor(v) and v.ndim == 3 for v in latents.values())
            per_prompt = [{n: v[i] for n, v in latents.items()} for i in range(count)] if batched else [latents] * count
            if batched and any(v.shape[0] != count for v in latents.values()):
                raise InputError(f"latents: (prompts, frames, channels) tensors need {count} rows, one per prompt")
        else:
            per_prompt = list(latents)
        if len(per_prompt) != count:
            raise InputError(f"latents has {len(per_prompt)} entries but there are {count} prompts")
        out = []
        for i, (group, noise) in enumerate(zip(self._single_pieces(timelines), per_prompt, strict=True)):
            timeline, offsets = group[0]
            if not isinstance(noise, Mapping) or set(noise) != set(present):
                got = sorted(noise) if isinstance(noise, Mapping) else type(noise).__name__
                raise InputError(f"latents for prompt {i} must map each stream the task samples, {present}, to a "
                                 f"tensor; got {got} (pipe.prepare_latents(...) gives them)")
            for name in present:
                expected = tuple(timeline.tracks[name].latent.shape)
                if not torch.is_tensor(noise[name]) or tuple(noise[name].shape) != expected:
                    got = tuple(noise[name].shape) if torch.is_tensor(noise[name]) else type(noise[name]).__name__
                    raise InputError(f"latents[{name!r}] for prompt {i} has shape {got}; expected {expected}: "
                                     f"(frames, channels) over the timeline ({offsets[name]} prompt frames, then the "
                                     f"main part) (pipe.prepare_latents(...) gives noise of the right shapes)")
            out.append([(Timeline(timeline.tracks, seed=timeline.seed, noise=dict(noise)), offsets)])
        return out

    def _step_callback(self, callback, tensor_inputs: Sequence[str]):
        """``callback_on_step_end`` as a ``LongFormSampler`` step callback, its tensor inputs checked."""
        if callback is None:
            return None
        from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback

        if isinstance(callback, PipelineCallback | MultiPipelineCallbacks):
            tensor_inputs = callback.tensor_inputs
        unknown = [name for name in tensor_inputs if name not in self._callback_tensor_inputs]
        if unknown:
            raise InputError(f"callback_on_step_end_tensor_inputs names {unknown}; this pipeline passes "
                             f"{self._callback_tensor_inputs}")

        def on_step(window: int, step: int, timestep: torch.Tensor, latents: dict[str, torch.Tensor]):
            self._window_index = window
            tensors = {"latents": latents}
            returned = callback(self, step, timestep, {name: tensors[name] for name in tensor_inputs})
            if not isinstance(returned, Mapping):
                raise TypeError(f"callback_on_step_end must return a dict (its callback_kwargs), got "
                                f"{type(returned).__name__}")
            new = returned.get("latents", latents)
            if not isinstance(new, Mapping) or set(new) != set(latents) or any(
                    tuple(new[n].shape) != tuple(latents[n].shape) for n in latents):
                raise InputError(f"callback_on_step_end returned latents that are not the given streams "
                                 f"{sorted(latents)} with their shapes")
            return {n: new[n].to(latents[n]) for n in latents}

        return on_step

    def _names(self, stream: str, task: TaskPreset) -> set[str]:
        return {item.name for item in self.codec(stream).inputs(task.codec_role(stream))}

    @staticmethod
    def _seeds(seed, count: int) -> list[int]:
        if isinstance(seed, numbers.Integral):
            return [int(seed) + i for i in range(count)]
        seeds = [int(s) for s in seed]
        if len(seeds) != count:
            raise InputError(f"seed has {len(seeds)} entries but there are {count} prompts")
        return seeds

    @staticmethod
    def _generator_seeds(generator, count: int) -> list[int]:
        """Per-prompt seeds drawn from a generator (one for all prompts, or one per prompt), so the same generator
        state gives the same samples, as in diffusers."""
        generators = list(generator) if isinstance(generator, Sequence) else [generator] * count
        if len(generators) != count:
            raise InputError(f"generator has {len(generators)} entries but there are {count} prompts")
        return [int(torch.randint(0, 2**62, (1,), generator=g)) for g in generators]

    def _pieces(self, streams: dict[str, EncodedStream], duration) -> list[dict[str, EncodedStream]]:
        """A prompt as consecutive pieces: one, unless a codec splits its stream (e.g. F5-TTS's sentence chunks)
        and no other stream has given content that fixes the timeline; the others are generated in every piece."""
        if any(encoded.content is not None for encoded in streams.values()):
            return [streams]
        for name, encoded in streams.items():
            split = getattr(self.codec(name), "split", None)
            pieces = split(encoded, duration) if split is not None else [encoded]
            if len(pieces) > 1:
                return [{**streams, name: piece} for piece in pieces]
        return [streams]

    def _lead(self, streams: Mapping[str, EncodedStream]) -> str:
        """The stream whose frames the timeline's length is counted in: the one with a prompt, else the first."""
        prompted = [n for n, e in streams.items() if e.prompt is not None]
        return prompted[0] if prompted else next(iter(streams))

    def _main_frames(self, task, streams: Mapping[str, EncodedStream], lead: str, duration) -> int:
        """The main part's length in the lead stream's frames: ``duration``, else the given lengths (which must
        agree), else the codecs' estimates."""
        specs = {n: self.transformer.stream_spec(n) for n in streams}
        if duration is not None:
            return specs[lead].num_frames(Fraction(duration).limit_denominator(100_000))
        known = {n: Fraction(e.frames) / specs[n].frame_rate for n, e in streams.items() if e.frames}
        if known:
            longest, shortest = max(known.values()), min(known.values())
            slowest = min(specs[n].frame_rate for n in known)
            if (longest - shortest) * slowest > 1:
                lengths = {n: f"{float(s):.2f} s" for n, s in known.items()}
                raise InputError(f"the given inputs last different times {lengths}; give inputs of the same duration")
            return streams[lead].frames or specs[lead].num_frames(longest)
        if streams[lead].estimate:
            return streams[lead].estimate
        estimates = [Fraction(e.estimate) / specs[n].frame_rate for n, e in streams.items() if e.estimate]
        if estimates:
            return specs[lead].num_frames(max(estimates))
        raise InputError(f"task {task.name!r} cannot tell how long to generate from these inputs: pass duration= "
                         f"(seconds)")

    def _timeline(self, task, streams: Mapping[str, EncodedStream], spans, duration, seed):
        """One piece's ``Timeline`` and, per stream, the frame where its main part starts.

        Every stream covers the same seconds: the lead stream's prompt then its main frames; the others round
        those instants to their own frames. The task's given streams are given where their content reaches.
        """
        model = self.transformer
        specs = {n: model.stream_spec(n) for n in model.stream_names}
        lead = self._lead(streams)
        rate = specs[lead].frame_rate
        prompt_seconds = Fraction(streams[lead].prompt_frames) / rate
        total = prompt_seconds + Fraction(self._main_frames(task, streams, lead, duration)) / rate
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
            given = track.given.clone()
            covered = first + min(frames, encoded.frames or frames)
            if task.role(name) == "given":
                given[first:covered] = True
            elif task.codec_role(name) == "edit":  # kept as given, except inside its spans
                if encoded.content is None:
                    raise InputError(f"editing stream {name!r} needs its current values to keep outside the spans: "
                                     f"pass them ({', '.join(sorted(self._names(name, task)))})")
                given[first:covered] = True
                try:
                    given = regenerate_spans(given, spec, (spans or {}).get(name, ()), offset=first)
                except ValueError as error:
                    raise InputError(str(error)) from error
            tracks[name] = StreamTrack(track.latent, given, track.cond, track.frame_extras, track.extras)
        device, dtype = model.device, model.dtype
        tracks = {n: _to(t, device, dtype) for n, t in tracks.items()}
        return Timeline(tracks, seed=seed), offsets

    def _join(self, pieces: list[torch.Tensor], stream: str, seconds: Fraction = PIECE_FADE_SECONDS) -> torch.Tensor:
        """Consecutive pieces of one stream, joined with a linear cross-fade of ``seconds``."""
        fade = self.transformer.stream_spec(stream).num_frames(seconds)
        out = pieces[0]
        for piece in pieces[1:]:
            n = min(fade, out.shape[0], piece.shape[0])
            if n == 0:
                out = torch.cat([out, piece])
                continue
            w = torch.linspace(0, 1, n + 2, dtype=out.dtype, device=out.device)[1:-1, None]
            out = torch.cat([out[:-n], (1 - w) * out[-n:] + w * piece[:n], piece[n:]])
        return out

    def _sample(self, task, timelines, steps, sway, guidance_scale, uncond_joint_view, joint_attention, progress,
                step_callback=None):
        scheduler = self.scheduler
        if steps is not None or sway is not None:  # a copy: the pipeline's scheduler keeps its configuration
            overrides = {} if sway is None else {"sway_coefficient": float(sway)}
            scheduler = FlowMatchingScheduler.from_config(self.scheduler.config, **overrides)
            scheduler.set_timesteps(int(steps if steps is not None else self.scheduler.config.num_inference_steps))
        self._num_timesteps, self._window_index = len(scheduler.grid) - 1, 0
        # every stream the task involves is guided: a given stream's noisy latent is an input of the others too
        present = [n for n in self.stream_names if task.role(n) != "absent"]
        if isinstance(guidance_scale, Mapping):
            unknown = sorted(set(guidance_scale) - set(self.stream_names))
            if unknown:
                raise InputError(f"guidance_scale names unknown stream(s) {unknown}; the model has {self.stream_names}")
            scales = {n: float(s) for n, s in guidance_scale.items() if n in present}
        else:
            scales = {n: float(guidance_scale) for n in present}
        guidance = Guidance(scales=scales, joint_view=dict(uncond_joint_view or {}))
        max_seconds = self.config.max_seconds
        sampler = LongFormSampler(self.transformer, max_seconds, context_seconds=min(2.0, max_seconds / 3))
        absent = tuple(n for n in self.stream_names if task.role(n) == "absent")
        return sampler(timelines, progress=progress, guidance=guidance if guidance.enabled else None,
                       scheduler=scheduler, joint_view=bool(joint_attention), absent=absent,
                       step_callback=step_callback)


def _to(track: StreamTrack, device, dtype) -> StreamTrack:
    return StreamTrack(
        track.latent.to(device, dtype),
        track.given.to(device),
        None if track.cond is None else track.cond.to(device, dtype),
        {k: v.to(device) for k, v in track.frame_extras.items()},
        {k: v.to(device) for k, v in track.extras.items()},
    )
