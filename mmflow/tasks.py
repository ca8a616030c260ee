"""Tasks as inpainting conditions: which frames of each stream are given and which are generated.

Every task of a multi-stream flow model is a choice of ``given`` masks. A ``TaskPreset`` (registered by plugins)
names the streams generated and the streams given whole; ``apply_task`` turns it, plus optional time spans to
regenerate, into the ``given`` masks of a batch. Frames come from times through each stream's exact rate, so
the same seconds select the same moment in every stream.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from .plugins import TaskPreset
from .streams import StreamBatch, StreamSpec


def span_frames(spec: StreamSpec, start: float, end: float) -> tuple[int, int]:
    """Frames ``[first, last)`` of ``spec`` whose start times fall in ``[start, end)`` seconds."""
    if not 0 <= start < end:
        raise ValueError(f"a span needs 0 <= start < end seconds, got ({start}, {end})")
    return spec.num_frames(start), spec.num_frames(end)


def apply_task(
    batches: Mapping[str, StreamBatch],
    specs: Mapping[str, StreamSpec],
    task: TaskPreset,
    spans: Mapping[str, list[tuple[float, float]]] | None = None,
) -> dict[str, StreamBatch]:
    """Set each stream's ``given`` mask for ``task``.

    Streams in ``task.given`` are given whole. Streams in ``task.generate`` are generated whole, or, when
    ``spans`` names them, only inside those ``(start, end)`` second spans (editing: the rest is kept exactly).
    Streams in neither keep the ``given`` mask they came with (e.g. a reference prompt).
    """
    unknown = sorted((set(task.generate) | set(task.given) | set(spans or {})) - set(batches))
    if unknown:
        raise KeyError(f"task {task.name!r} names stream(s) {unknown} that the batch lacks; it has {sorted(batches)}")
    out = dict(batches)
    for name in task.given:
        batch = batches[name]
        out[name] = batch.replace(given=batch.valid.clone())
    for name in task.generate:
        batch = batches[name]
        if spans and name in spans:
            given = batch.valid.clone()
            for start, end in spans[name]:
                first, last = span_frames(specs[name], start, end)
                if first >= batch.num_frames:
                    raise ValueError(
                        f"span ({start}, {end}) s starts after the end of stream {name!r} "
                        f"({specs[name].seconds(batch.num_frames):.2f} s)"
                    )
                given[:, first:last] = False
        else:
            given = torch.zeros_like(batch.valid)
        out[name] = batch.replace(given=given & batch.valid)
    return out
