"""Tasks as inpainting conditions: which streams are given, generated or absent, and what the user supplies.

Every task of a multi-stream flow model is a choice of ``given`` masks. A ``TaskPreset`` (registered by plugins)
names the streams generated, the streams given whole and the streams absent (left out of sampling entirely, so
that a 3-stream model can run a 2-stream task), plus the task's own user inputs beyond those its streams' codecs
declare. ``apply_task`` turns a preset, plus optional time spans to regenerate, into the ``given`` masks of a
batch; ``regenerate_spans`` is the one place where spans become frames. Frames come from times through each
stream's exact rate, so the same seconds select the same moment in every stream.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .streams import StreamBatch, StreamSpec

ROLES = ("generate", "given", "absent")


@dataclass(frozen=True)
class TaskInput:
    """One user input of a task: its keyword name, a one-line description, and whether the task needs it."""

    name: str
    description: str
    required: bool = False


@dataclass(frozen=True)
class TaskPreset:
    """A named inpainting task.

    Args:
        name: The task's name (``mmflow tasks``).
        description: One line for listings.
        generate: Streams sampled (whole, or inside ``spans`` when the task is ``editable``).
        given: Streams given whole (their inputs are required).
        absent: Streams left out: nothing sampled, and no other stream attends to them.
        inputs: User inputs of the task itself, besides those the streams' codecs declare for their role.
        editable: The task takes ``spans``: generated streams are given except inside those seconds.

    Streams of the model named in none of the three are generated.
    """

    name: str
    description: str
    generate: tuple[str, ...]
    given: tuple[str, ...] = ()
    absent: tuple[str, ...] = ()
    inputs: tuple[TaskInput, ...] = ()
    editable: bool = False

    def __post_init__(self):
        named = [*self.generate, *self.given, *self.absent]
        twice = sorted({n for n in named if named.count(n) > 1})
        if twice:
            raise ValueError(f"task {self.name!r} gives stream(s) {twice} more than one role (generate/given/absent)")
        if not self.generate:
            raise ValueError(f"task {self.name!r} generates no stream; name at least one in `generate`")

    def role(self, stream: str) -> str:
        """``generate``, ``given`` or ``absent`` for one of the model's streams."""
        if stream in self.given:
            return "given"
        if stream in self.absent:
            return "absent"
        return "generate"

    def codec_role(self, stream: str) -> str:
        """The role a stream's codec sees: ``role``, with ``edit`` for a generated stream of an editable task
        (generated inside the spans, kept elsewhere, so its current values are an input)."""
        role = self.role(stream)
        return "edit" if role == "generate" and self.editable else role

    def check_streams(self, streams: Sequence[str]) -> None:
        """Refuse a task that names streams the model lacks."""
        unknown = sorted((set(self.generate) | set(self.given) | set(self.absent)) - set(streams))
        if unknown:
            raise ValueError(f"task {self.name!r} names stream(s) {unknown} that this model lacks; it has {list(streams)}")


def declared_inputs(task: TaskPreset, streams: Sequence[str], codec_of: Callable[[str], Any]) -> tuple[TaskInput, ...]:
    """Every user input of ``task`` on a model with ``streams``: the task's own, then what each present stream's
    codec (``codec_of(stream)``, anything with ``inputs(role)``) reads in its role; one entry per name, required
    when any says so."""
    merged: dict[str, TaskInput] = {item.name: item for item in task.inputs}
    for stream in streams:
        role = task.codec_role(stream)
        if role == "absent":
            continue
        for item in codec_of(stream).inputs(role):
            known = merged.get(item.name)
            if known is None:
                merged[item.name] = item
            elif item.required and not known.required:
                merged[item.name] = TaskInput(known.name, known.description, True)
    return tuple(merged.values())


def span_frames(spec: StreamSpec, start: float, end: float) -> tuple[int, int]:
    """Frames ``[first, last)`` of ``spec`` whose start times fall in ``[start, end)`` seconds."""
    if not 0 <= start < end:
        raise ValueError(f"a span needs 0 <= start < end seconds, got ({start}, {end})")
    return spec.num_frames(start), spec.num_frames(end)


def regenerate_spans(
    given: torch.Tensor, spec: StreamSpec, spans: Sequence[tuple[float, float]], offset: int = 0
) -> torch.Tensor:
    """``given`` (``(..., n)``) with the frames inside each ``(start, end)`` span cleared (to be regenerated).

    Seconds count from frame ``offset`` (e.g. after a prompt); a span starting past the end is refused.
    """
    given = given.clone()
    n = given.shape[-1] - offset
    for start, end in spans:
        first, last = span_frames(spec, start, end)
        if first >= n:
            raise ValueError(
                f"span ({start}, {end}) s starts after the end of stream {spec.name!r} ({spec.seconds(n):.2f} s)"
            )
        given[..., offset + first : offset + last] = False
    return given


def apply_task(
    batches: Mapping[str, StreamBatch],
    specs: Mapping[str, StreamSpec],
    task: TaskPreset,
    spans: Mapping[str, list[tuple[float, float]]] | None = None,
) -> dict[str, StreamBatch]:
    """Set each stream's ``given`` mask for ``task``.

    Streams in ``task.given`` (and ``task.absent``) are given whole. Streams in ``task.generate`` are generated
    whole, or, when ``spans`` names them, only inside those ``(start, end)`` second spans (editing: the rest is
    kept exactly). Streams in none keep the ``given`` mask they came with (e.g. a reference prompt).
    """
    unknown = sorted((set(task.generate) | set(task.given) | set(spans or {})) - set(batches))
    if unknown:
        raise KeyError(f"task {task.name!r} names stream(s) {unknown} that the batch lacks; it has {sorted(batches)}")
    out = dict(batches)
    for name in (*task.given, *(n for n in task.absent if n in batches)):
        batch = batches[name]
        out[name] = batch.replace(given=batch.valid.clone())
    for name in task.generate:
        batch = batches[name]
        if spans and name in spans:
            given = regenerate_spans(batch.valid, specs[name], spans[name])
        else:
            given = torch.zeros_like(batch.valid)
        out[name] = batch.replace(given=given & batch.valid)
    return out
