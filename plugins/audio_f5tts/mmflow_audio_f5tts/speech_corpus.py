"""The speech of the synthetic corpus, on its own: clip ``i`` is a plain sentence in a voice drawn from
``(seed, i)``, spoken by espeak-ng, deterministically and offline.

The JAM-Flow corpus (``mmflow_jamflow.data.corpus``) adds face motion to these clips; the vocoder recipe
(``mmflow_audio_f5tts.vocoder_recipe``) trains on their waveforms alone, so it needs no face plugin.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from typing import Any

from .espeak import VOICES, EspeakEngine, SpokenText, Voice
from .sentences import SentenceGenerator

logger = logging.getLogger(__name__)

DEFAULT_RATES: tuple[int, ...] = (150, 165, 180)
MAX_TRIES = 24
"""Sentences tried per clip to land in ``[min_seconds, max_seconds]``."""


def as_voice(voice: Voice | str) -> Voice:
    """A ``Voice``: itself, the known voice of that espeak name, or a new voice of that name."""
    if isinstance(voice, Voice):
        return voice
    if isinstance(voice, str):
        known = {v.name: v for v in VOICES}
        return known.get(voice, Voice(voice))
    raise TypeError(f"voices must be Voice objects or espeak voice names such as 'en-us+f3', got {voice!r}")


@dataclasses.dataclass(frozen=True)
class CorpusConfig:
    """Everything that decides the clips' speech (and so, with the corpus version, its cache name)."""

    seed: int
    voices: tuple[Voice, ...]
    rates: tuple[int, ...] | None
    min_seconds: float
    max_seconds: float

    @classmethod
    def build(cls, seed, voices=None, rates=DEFAULT_RATES, min_seconds=1.0, max_seconds=10.0) -> CorpusConfig:
        """A config from loose arguments (voice names, lists), checked: voices default to all known ones."""
        if not 0 < min_seconds <= max_seconds:
            raise ValueError(f"need 0 < min_seconds <= max_seconds, got {min_seconds}, {max_seconds}")
        voices = tuple(as_voice(v) for v in (voices or VOICES))
        if not voices:
            raise ValueError("voices must name at least one espeak voice")
        return cls(int(seed), voices, tuple(int(r) for r in rates) if rates else None, float(min_seconds),
                   float(max_seconds))

    def fingerprint_payload(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "voices": [dataclasses.asdict(v) for v in self.voices],
            "rates": list(self.rates) if self.rates else None,
            "min_seconds": self.min_seconds,
            "max_seconds": self.max_seconds,
        }


def _pick_voice(rng: random.Random, config: CorpusConfig) -> Voice:
    voice = rng.choice(config.voices)
    if config.rates:
        voice = dataclasses.replace(voice, rate=rng.choice(config.rates))
    return voice


def _word_range(voice: Voice, config: CorpusConfig) -> tuple[int, int]:
    """Sentence lengths likely to land in the duration range at this rate (espeak adds ~0.3 s of pauses)."""
    words_per_second = voice.rate / 60.0
    high = int(min(20, max(3, (config.max_seconds - 0.3) * words_per_second)))
    low = int(min(high, max(3, 0.6 * (config.min_seconds - 0.3) * words_per_second)))
    return low, high


def _miss(seconds: float, config: CorpusConfig) -> float:
    return max(config.min_seconds - seconds, seconds - config.max_seconds, 0.0)


def speak_clip(index: int, config: CorpusConfig, engine: EspeakEngine) -> tuple[SpokenText, Voice]:
    """Clip ``index``'s speech: a sentence and voice drawn from ``(seed, index)``, in the duration range if it
    can be (the closest of a few tries otherwise, with a warning)."""
    voice = _pick_voice(random.Random(f"jamflow-corpus-voice/{config.seed}/{index}"), config)
    text_seed = f"jamflow-corpus-text/{config.seed}/{index}"
    sentences = iter(SentenceGenerator(text_seed, *_word_range(voice, config)))
    best: SpokenText | None = None
    for _ in range(MAX_TRIES):
        spoken = engine.synthesize(next(sentences), voice)
        if config.min_seconds <= spoken.seconds <= config.max_seconds:
            return spoken, voice
        if best is None or _miss(spoken.seconds, config) < _miss(best.seconds, config):
            best = spoken
    logger.warning(
        "clip %d: no sentence in [%.1f, %.1f] s after %d tries; using %.2f s",
        index, config.min_seconds, config.max_seconds, MAX_TRIES, best.seconds,
    )
    return best, voice
