"""Time-aligned phoneme conditioning: one espeak-ng phoneme id per mel frame.

Why: F5-TTS conditions on characters padded with filler tokens and leaves the alignment to the model, which
a large model learns from tens of thousands of hours. A small model trained on a small corpus does not
(``shared/reference/tiny-tts-feasibility.md``); giving it the phoneme that is being spoken at every frame
makes the text usable after minutes of training. espeak-ng supplies both the phonemes and their times
(:mod:`.espeak`), at training time for the corpus and at inference for the text to say.

Frame convention: mel frame ``i`` of F5's centred STFT is centred on sample ``i * 256`` of 24 kHz audio,
i.e. at time ``i / 93.75`` s, and gets the phone active at that instant.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

from .espeak import SILENCE, EspeakEngine, Phone, SpokenText, Voice
from .mel import FRAME_RATE, SAMPLE_RATE, num_frames

logger = logging.getLogger(__name__)

UNKNOWN = "<unk>"
"""Stands for any phoneme not in the vocabulary (another language's phonemes, a newer espeak-ng)."""

PAUSES: tuple[str, ...] = (SILENCE, "_:", "_!", "_|", "_::", "_;_", "_^_", "_X1", "||")
"""espeak-ng's pause phonemes (base table); ``_`` comes first so the silence id is 0."""

CONSONANTS: tuple[str, ...] = (
    ";",
    "?",
    "D",
    "N",
    "S",
    "T",
    "Z",
    "b",
    "d",
    "d#",
    "dZ",
    "f",
    "g",
    "h",
    "j",
    "k",
    "l",
    "m",
    "n",
    "p",
    "r",
    "r-",
    "r/",
    "s",
    "t",
    "t#",
    "t2",
    "tS",
    "v",
    "w",
    "w#",
    "z",
    "z#",
    "z/2",
)
"""Consonants of the ``en`` / ``en-us`` phoneme tables plus those seen in practice; espeak never stresses them."""

VOWELS: tuple[str, ...] = (
    "0",
    "0#",
    "02",
    "3",
    "3:",
    "@",
    "@#",
    "@-",
    "@2",
    "@5",
    "@L",
    "A#",
    "A:",
    "A@",
    "A~",
    "E",
    "E#",
    "E2",
    "I",
    "I#",
    "I2",
    "I2#",
    "IR",
    "O",
    "O2",
    "O:",
    "O@",
    "OI",
    "O~",
    "U",
    "U@",
    "V",
    "VR",
    "a",
    "a#",
    "a#2",
    "a2",
    "aI",
    "aI3",
    "aI@",
    "aU",
    "aU@",
    "aa",
    "e#",
    "e:",
    "e@",
    "eI",
    "i",
    "i:",
    "i@",
    "i@3",
    "n-",
    "o:",
    "o@",
    "oU",
    "oU#",
    "u:",
)
"""Vowels (and syllabic consonants) of the ``en`` / ``en-us`` tables plus those seen in practice."""

STRESS_MARKS: tuple[str, ...] = ("'", ",")
"""espeak-ng prefixes a stressed vowel's name with ``'`` (primary) or ``,`` (secondary); kept as separate phones."""

ENGLISH_PHONEMES: tuple[str, ...] = (
    PAUSES[0],
    UNKNOWN,
    *PAUSES[1:],
    *CONSONANTS,
    *(mark + vowel for vowel in VOWELS for mark in ("", *STRESS_MARKS)),
)
"""The default vocabulary. Checked against espeak-ng 1.52 output for ~450 varied English sentences in the
``VOICES`` of :mod:`.espeak` at rates 110-300 wpm: every phone it produced is in this list (116 distinct),
and the list is closed under stress marking and covers the ``en`` and ``en-us`` phoneme tables."""


class PhonemeVocab:
    """espeak-ng phoneme mnemonics ↔ integer ids (id 0 is the silence ``_``; unknown phones get ``<unk>``)."""

    def __init__(self, symbols: Sequence[str] = ENGLISH_PHONEMES) -> None:
        symbols = list(symbols)
        for symbol in symbols:
            if not isinstance(symbol, str) or not symbol or any(c.isspace() for c in symbol):
                raise ValueError(
                    f"PhonemeVocab: symbols must be non-empty strings without whitespace, got {symbol!r}"
                )
        duplicates = sorted({s for s in symbols if symbols.count(s) > 1})
        if duplicates:
            raise ValueError(f"PhonemeVocab: duplicate symbols {duplicates}")
        for required in (SILENCE, UNKNOWN):
            if required not in symbols:
                raise ValueError(f"PhonemeVocab: the vocabulary must contain {required!r}")
        self.symbols: tuple[str, ...] = tuple(symbols)
        self._ids = {symbol: i for i, symbol in enumerate(self.symbols)}
        self.silence_id = self._ids[SILENCE]
        self.unknown_id = self._ids[UNKNOWN]
        self._reported: set[str] = set()

    def __len__(self) -> int:
        return len(self.symbols)

    def __contains__(self, symbol: object) -> bool:
        return symbol in self._ids

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PhonemeVocab) and other.symbols == self.symbols

    def __hash__(self) -> int:
        return hash(self.symbols)

    def __repr__(self) -> str:
        return f"PhonemeVocab({len(self)} symbols)"

    def encode(self, symbols: Iterable[str]) -> list[int]:
        """Ids of ``symbols``; unknown ones become ``unknown_id`` (logged once per symbol)."""
        ids = []
        for symbol in symbols:
            index = self._ids.get(symbol)
            if index is None:
                if symbol not in self._reported:
                    self._reported.add(symbol)
                    logger.warning("phoneme %r is not in the vocabulary; encoding it as %s", symbol, UNKNOWN)
                index = self.unknown_id
            ids.append(index)
        return ids

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Symbols of ``ids`` (for inspection); raises ``IndexError`` for ids outside the vocabulary."""
        out = []
        for index in ids:
            if not 0 <= int(index) < len(self.symbols):
                raise IndexError(f"PhonemeVocab.decode: id {index} is outside [0, {len(self.symbols)})")
            out.append(self.symbols[int(index)])
        return out

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write one symbol per line (like F5-TTS's ``vocab.txt``); line ``i`` is id ``i``."""
        Path(path).write_text("".join(symbol + "\n" for symbol in self.symbols), encoding="utf-8")

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> PhonemeVocab:
        """Read a file written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"phoneme vocabulary not found: {path}")
        lines = path.read_text(encoding="utf-8").splitlines()
        while lines and not lines[-1]:
            lines.pop()
        try:
            return cls(lines)
        except ValueError as error:
            raise ValueError(f"{path}: not a phoneme vocabulary ({error})") from error


def frame_phoneme_ids(
    phones: Sequence[Phone], num_frames: int, vocab: PhonemeVocab, frame_rate: Fraction | float = FRAME_RATE
) -> np.ndarray:
    """The id of the phone active at each frame's centre time ``i / frame_rate``, int64 ``(num_frames,)``.

    Phones are half-open spans ``[start, end)`` in seconds, in order, as :class:`SpokenText` gives them.
    Frames after the last phone (or in a gap between phones) get the silence id.
    """
    if num_frames < 0:
        raise ValueError(f"frame_phoneme_ids: num_frames must be >= 0, got {num_frames}")
    if frame_rate <= 0:
        raise ValueError(f"frame_phoneme_ids: frame_rate must be positive, got {frame_rate}")
    ids = np.full(num_frames, vocab.silence_id, dtype=np.int64)
    if not phones or num_frames == 0:
        return ids
    starts = np.array([p.start for p in phones], dtype=np.float64)
    ends = np.array([p.end for p in phones], dtype=np.float64)
    if np.any(ends < starts) or np.any(starts[1:] < ends[:-1] - 1e-9):
        raise ValueError("frame_phoneme_ids: phones must be in time order and must not overlap")
    times = np.arange(num_frames, dtype=np.float64) / float(frame_rate)
    index = np.searchsorted(starts, times, side="right") - 1  # last phone starting at or before each centre
    inside = (index >= 0) & (times < ends[np.clip(index, 0, None)])
    phone_ids = np.asarray(vocab.encode(p.symbol for p in phones), dtype=np.int64)
    ids[inside] = phone_ids[index[inside]]
    return ids


def aligned_text_ids(
    engine: EspeakEngine, text: str, voice: Voice, vocab: PhonemeVocab
) -> tuple[np.ndarray, SpokenText]:
    """Speak ``text`` with espeak-ng and return its per-frame phoneme ids and the speech.

    ``len(ids)`` equals the number of mel frames of ``spoken.waveform`` (``mel.num_frames``), so the ids
    line up with the mel of that audio for training, and give the length of the speech to generate at
    inference.
    """
    if engine.sample_rate != SAMPLE_RATE:
        raise ValueError(
            f"aligned_text_ids: the engine must produce {SAMPLE_RATE} Hz audio to match the mel frames, got "
            f"{engine.sample_rate} Hz; use EspeakEngine() with the default sample rate"
        )
    spoken = engine.synthesize(text, voice)
    ids = frame_phoneme_ids(spoken.phones, num_frames(spoken.waveform.shape[-1]), vocab)
    return ids, spoken
