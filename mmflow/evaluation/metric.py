"""The contracts between the evaluation runner, the metrics and the benchmark lists plugins register.

A **metric** reads files by kind. Generated outputs and references are both ``{kind: path}`` mappings, so a
metric written for ``"audio"`` (a wav file) scores the audio of any model whose pipeline writes one, whatever
its streams. Kinds used by the bundled plugins: ``audio`` (wav), ``video`` (mp4, with or without sound),
``motion`` (npz of the motion stream); plus ``Sample.text``, the words the audio should say.

A need may name alternatives, ``"prompt_audio|audio"``: the first of those kinds that the sample has (per sample;
:func:`first_kind`), so a speaker metric compares with the prompt where a benchmark gives one and with the item's
recording elsewhere. The runner checks that every sample has one of them and caches rows by the file it chose.

A **benchmark** is a list of ``BenchmarkItem``: what to ask the pipeline (task + inputs) and what to compare the
result with. Plugins register metric factories (``mmflow_metrics``) and benchmark loaders
(``mmflow_benchmarks``); ``mmflow.evaluation.runner`` generates, scores, caches and reports.

A **loader** is called ``loader(root)`` or, when it declares the keywords, ``loader(root, limit=N,
options={...})``: ``root`` the local dataset folder (None for lists shipped in a plugin), ``limit`` the number of
items wanted (None: all; a loader that prepares files per item stops after that many, the runner cuts the list
anyway), ``options`` the ``--benchmark-option KEY=VALUE`` strings (a loader refuses keys it does not know, by
name). Options given to a loader that declares no ``options`` keyword are refused by the runner.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class BenchmarkItem:
    """One entry of a benchmark list: generate with ``task`` and ``inputs``, then compare with ``reference``.

    ``inputs`` are the pipeline's call inputs (paths as ``str``), ``reference`` the ground-truth files by kind
    (e.g. ``{"audio": ..., "video": ...}``, and ``"prompt_audio"`` for speaker similarity to the prompt), ``text``
    the transcript of the speech to be generated (for WER).
    """

    id: str
    task: str
    inputs: Mapping[str, Any] = field(default_factory=dict)
    reference: Mapping[str, Path] = field(default_factory=dict)
    text: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Sample:
    """One generated item as the metrics see it: its files by kind, next to the item's references."""

    id: str
    files: Mapping[str, Path]
    reference: Mapping[str, Path] = field(default_factory=dict)
    text: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class Metric(Protocol):
    """A metric, built by a registered factory ``factory(options: Mapping[str, str], workdir: Path) -> Metric``.

    ``options`` come from the command line (``--metric-option wer.model=/path``): weight paths, modes. A
    factory raises ``mmflow.codecs.InputError`` naming the option and the fix when something is missing (e.g.
    an official weights file). ``workdir`` is the metric's own folder inside the evaluation folder, for caches
    (features of set-level metrics such as FID).

    ``score`` returns one JSON-able row per sample, in order, and is called with at most ``batch_size`` samples
    at a time; rows are cached by the runner, so an interrupted evaluation resumes where it stopped.
    ``summarise`` turns all rows into the reported numbers (the first key is the headline): per-sample means,
    pooled figures (WER over all words), or set-level statistics (FID between two feature sets).

    ``higher_is_better`` is the headline's direction. A metric may also have ``directions: Mapping[str, bool]``,
    summary key → higher is better, for its other figures (``{"lse_d": False}``); keys in neither (counts,
    offsets) are reported without a direction.
    """

    name: str
    needs: frozenset[str]
    """File kinds the metric reads from ``Sample.files`` (``"text"`` means ``Sample.text``; ``"a|b"``: the first
    of these the sample has)."""
    reference_needs: frozenset[str]
    """File kinds the metric reads from ``Sample.reference`` (as ``needs``)."""
    higher_is_better: bool
    batch_size: int

    def score(self, samples: Sequence[Sample]) -> list[dict[str, Any]]: ...

    def summarise(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, float]: ...


def first_kind(need: str, kinds: Collection[str]) -> str | None:
    """The kind a need is met with: the first of its ``|``-separated alternatives in ``kinds``, else None."""
    return next((kind for kind in need.split("|") if kind in kinds), None)
