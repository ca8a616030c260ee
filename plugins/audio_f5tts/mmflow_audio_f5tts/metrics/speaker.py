"""What the speaker-similarity metrics share: per sample, one similarity between the generated audio and a
reference clip of a chosen kind (the original prompt by default); the reported figure is the mean."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmflow.codecs import InputError
from mmflow.evaluation import Sample

REFERENCE_KINDS = ("prompt_audio", "audio")
REFERENCE_HELP = "prompt_audio (default: the original prompt clip) or audio (the item's reference recording)"


def reference_kind(metric: str, options: Mapping[str, str]) -> str:
    """The ``reference`` option: which reference file the generated speech is compared with."""
    kind = options.get("reference", REFERENCE_KINDS[0])
    if kind not in REFERENCE_KINDS:
        raise InputError(f"--metric-option {metric}.reference={kind}: expected {' or '.join(REFERENCE_KINDS)}")
    return kind


class SpeakerSimilarity:
    """Base of a speaker-similarity metric: subclasses set ``name`` and ``batch_size`` and define
    :meth:`similarity`."""

    name: str
    batch_size: int
    needs = frozenset({"audio"})
    higher_is_better = True

    def __init__(self, reference: str) -> None:
        self.reference = reference
        self.reference_needs = frozenset({reference})

    def similarity(self, generated: Path, reference: Path) -> float:
        raise NotImplementedError

    def score(self, samples: Sequence[Sample]) -> list[dict[str, Any]]:
        return [{self.name: self.similarity(sample.files["audio"], sample.reference[self.reference])}
                for sample in samples]

    def summarise(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
        return {self.name: float(np.mean([row[self.name] for row in rows]))} if rows else {}
