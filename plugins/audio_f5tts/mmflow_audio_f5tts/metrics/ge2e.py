"""``speaker_sim_ge2e``: the offline speaker-similarity proxy, resemblyzer's GE2E encoder (weights in its wheel).

A different metric from SIM-o: GE2E (Wan et al. 2018, a 3-layer LSTM on 40-band mel frames, resemblyzer 0.1.4's
``pretrained.pt``) instead of WavLM-Large + ECAPA-TDNN, resemblyzer's own preprocessing (16 kHz, volume
normalisation to -30 dBFS, webrtcvad silence trimming) and the cosine of its L2-normalised utterance embeddings.
Its values are not comparable with SIM-o figures in papers; it runs anywhere, with no weights to fetch.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from mmflow.codecs import InputError
from mmflow.evaluation.options import check_options

from .speaker import DEFAULT_REFERENCE, REFERENCE_HELP, SpeakerSimilarity, reference_kind

OPTIONS = {"reference": REFERENCE_HELP}


class GE2ESimilarity(SpeakerSimilarity):
    """Cosine of resemblyzer utterance embeddings (unit vectors) of the generated audio and the reference clip."""

    name = "speaker_sim_ge2e"
    batch_size = 16

    def __init__(self, reference: str = DEFAULT_REFERENCE) -> None:
        super().__init__(reference)
        try:
            from resemblyzer import VoiceEncoder, preprocess_wav
        except ImportError as error:
            raise InputError(f"metric 'speaker_sim_ge2e' needs resemblyzer ({error}): "
                             f"pip install -r requirements/eval.txt") from error
        self._preprocess = preprocess_wav
        self.encoder = VoiceEncoder("cpu", verbose=False)

    def embed(self, path: Path) -> np.ndarray:
        return self.encoder.embed_utterance(self._preprocess(Path(path)))

    def similarity(self, generated: Path, reference: Path) -> float:
        return float(np.dot(self.embed(generated), self.embed(reference)))


def make_speaker_sim_ge2e(options: Mapping[str, str], workdir: Path) -> GE2ESimilarity:
    """Factory for ``mmflow_metrics``."""
    return GE2ESimilarity(reference_kind(check_options("metric", "speaker_sim_ge2e", options, OPTIONS)))
