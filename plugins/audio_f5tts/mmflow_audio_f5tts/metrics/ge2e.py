"""``speaker_sim_ge2e``: the offline speaker-similarity proxy, resemblyzer's GE2E encoder (weights in its wheel).

A different metric from SIM-o: GE2E (Wan et al. 2018, a 3-layer LSTM on 40-band mel frames, resemblyzer 0.1.4's
``pretrained.pt``) instead of WavLM-Large + ECAPA-TDNN, resemblyzer's own preprocessing (16 kHz, volume
normalisation to -30 dBFS, webrtcvad silence trimming) and the cosine of its L2-normalised utterance embeddings.
Its values are not comparable with SIM-o figures in papers; it runs anywhere, with no weights to fetch.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmflow.codecs import InputError
from mmflow.evaluation import Sample

from .options import check_options

logger = logging.getLogger(__name__)

OPTIONS = {
    "reference": "prompt_audio (default: the original prompt clip) or audio (the item's reference recording)",
}


class GE2ESimilarity:
    """Cosine of resemblyzer utterance embeddings of the generated audio and the reference clip."""

    name = "speaker_sim_ge2e"
    needs = frozenset({"audio"})
    higher_is_better = True
    batch_size = 16

    def __init__(self, reference: str = "prompt_audio") -> None:
        try:
            from resemblyzer import VoiceEncoder, preprocess_wav
        except ImportError as error:
            raise InputError(f"metric 'speaker_sim_ge2e' needs resemblyzer ({error}): "
                             f"pip install -r requirements/eval.txt") from error
        self.reference = reference
        self.reference_needs = frozenset({reference})
        self._preprocess = preprocess_wav
        self.encoder = VoiceEncoder("cpu", verbose=False)

    def embed(self, path: Path) -> np.ndarray:
        return self.encoder.embed_utterance(self._preprocess(Path(path)))

    def score(self, samples: Sequence[Sample]) -> list[dict[str, Any]]:
        return [{"speaker_sim_ge2e": float(np.dot(self.embed(sample.files["audio"]),
                                                  self.embed(sample.reference[self.reference])))}
                for sample in samples]

    def summarise(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
        if not rows:
            return {}
        return {"speaker_sim_ge2e": float(np.mean([row["speaker_sim_ge2e"] for row in rows]))}


def make_speaker_sim_ge2e(options: Mapping[str, str], workdir: Path) -> GE2ESimilarity:
    """Factory for ``mmflow_metrics``."""
    options = check_options("speaker_sim_ge2e", options, OPTIONS)
    reference = options.get("reference", "prompt_audio")
    if reference not in ("prompt_audio", "audio"):
        raise InputError(f"--metric-option speaker_sim_ge2e.reference={reference}: expected prompt_audio or audio")
    return GE2ESimilarity(reference)
