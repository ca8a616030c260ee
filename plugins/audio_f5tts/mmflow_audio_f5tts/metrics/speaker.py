"""What the speaker-similarity metrics share: per sample, one similarity between the generated audio and a
reference clip of a chosen kind (the original prompt where the benchmark gives one, else the item's recording);
the reported figure is the mean."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmflow.codecs import InputError
from mmflow.evaluation import Sample, first_kind
from mmflow.evaluation.options import Options

REFERENCE_KINDS = ("prompt_audio", "audio")
DEFAULT_REFERENCE = "prompt_audio|audio"
"""The original prompt clip where the benchmark gives one (F5-TTS's SIM-o), else the item's own recording."""
REFERENCE_HELP = ("prompt_audio|audio (default: the prompt clip where there is one, else the item's recording), "
                  "prompt_audio (the prompt only) or audio (the recording only)")


def reference_kind(options: Options) -> str:
    """The ``reference`` option: which reference file the generated speech is compared with — a kind, or kinds
    in order of preference joined by ``|`` (a need with alternatives, ``mmflow.evaluation.first_kind``)."""
    kind = options.given("reference")
    if kind is None:
        return DEFAULT_REFERENCE
    kinds = kind.split("|")
    if any(k not in REFERENCE_KINDS for k in kinds) or len(set(kinds)) != len(kinds):
        raise options.refuse("reference", kind, f"{' or '.join(REFERENCE_KINDS)}, or both joined by | in order "
                                                f"of preference")
    return kind


def references_used(kinds: Sequence[str]) -> str:
    """The reference kinds the rows were compared with: one kind, or each with its count (``prompt_audio (3),
    audio (2)``)."""
    counts = Counter(kinds)
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{kind} ({count})" for kind, count in counts.most_common())


class SpeakerSimilarity:
    """Base of a speaker-similarity metric: subclasses set ``name`` and ``batch_size`` and define
    :meth:`similarity`. Each row says which reference kind it was compared with, and so does the summary."""

    name: str
    batch_size: int
    needs = frozenset({"audio"})
    higher_is_better = True

    def __init__(self, reference: str) -> None:
        self.reference = reference
        self.reference_needs = frozenset({reference})
        self.directions = {self.name: True}

    def similarity(self, generated: Path, reference: Path) -> float:
        raise NotImplementedError

    def score(self, samples: Sequence[Sample]) -> list[dict[str, Any]]:
        rows = []
        for sample in samples:
            kind = first_kind(self.reference, sample.reference)
            if kind is None:
                raise InputError(f"{self.name}: sample {sample.id!r} has no {self.reference} reference")
            rows.append({self.name: self.similarity(sample.files["audio"], sample.reference[kind]), "reference": kind})
        return rows

    def summarise(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        if not rows:
            return {}
        return {self.name: float(np.mean([row[self.name] for row in rows])),
                "reference": references_used([row.get("reference", self.reference) for row in rows])}
