"""Word error rate the way F5-TTS computes it: its text normalisation, jiwer's word split, per-utterance WER.

Followed: F5-TTS 1.1.22, ``f5_tts/eval/utils_eval.py`` (``run_asr_wer``), which removes every character of
``zhon.hanzi.punctuation + string.punctuation`` (deleted, not replaced by a space: "don't" -> "dont",
"sand-castle" -> "sandcastle"), replaces double spaces by single ones, lowercases (English), and scores each
utterance with ``jiwer.process_words`` (jiwer 4.0.0: its default transform collapses runs of whitespace, strips,
splits on single spaces; WER = word edit distance / reference words, and an empty reference scores the number of
hypothesis words). Numbers are not spelled out: "7" and "seven" differ, as in F5-TTS. The benchmark WER is the
mean of the per-utterance values (``eval_librispeech_test_clean.py``), not errors pooled over all words.

Neither zhon nor jiwer is a dependency: the punctuation set and the word-level Levenshtein distance are here.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

# zhon 2.x ``zhon.hanzi.punctuation`` (= non_stops + stops, src/zhon/hanzi.py), as F5-TTS imports it.
_ZHON_NON_STOPS = (
    "\uff02\uff03\uff04\uff05\uff06\uff07\uff08\uff09\uff0a\uff0b\uff0c\uff0d\uff0f\uff1a\uff1b\uff1c\uff1d\uff1e"
    "\uff20\uff3b\uff3c\uff3d\uff3e\uff3f\uff40\uff5b\uff5c\uff5d\uff5e\uff5f\uff60"  # fullwidth ASCII variants
    "\uff62\uff63\uff64"  # halfwidth CJK punctuation
    "\u3000\u3001\u3003"  # CJK symbols and punctuation (\u3000 is the ideographic space)
    "\u3008\u3009\u300a\u300b\u300c\u300d\u300e\u300f\u3010\u3011"  # CJK angle and corner brackets
    "\u3014\u3015\u3016\u3017\u3018\u3019\u301a\u301b\u301c\u301d\u301e\u301f"  # CJK brackets
    "\u3030\u303e\u303f"  # other CJK symbols, special indicators
    "\u2013\u2014"  # en and em dash
    "\u2018\u2019\u201b\u201c\u201d\u201e\u201f"  # curly quotes and apostrophes
    "\u2026\u2027\ufe4f\ufe51\ufe54\u00b7"  # ellipsis, hyphenation point, small forms, middle dot
)
_ZHON_STOPS = "\uff0e\uff01\uff1f\uff61\u3002"
PUNCTUATION = _ZHON_NON_STOPS + _ZHON_STOPS + string.punctuation
"""Every character F5-TTS deletes before scoring (``punctuation_all`` in ``run_asr_wer``)."""

_DELETE_PUNCTUATION = str.maketrans("", "", PUNCTUATION)
_WHITESPACE_RUN = re.compile(r"\s\s+")


def normalize(text: str, lang: str = "en") -> str:
    """F5-TTS's normalisation of a transcript or an ASR hypothesis (English: lowercased; Chinese: one word per
    character, as its char-level WER does)."""
    text = text.translate(_DELETE_PUNCTUATION).replace("  ", " ")
    if lang == "en":
        return text.lower()
    if lang == "zh":
        return " ".join(text)
    raise ValueError(f"lang must be 'en' or 'zh' (F5-TTS's WER languages), got {lang!r}")


def split_words(text: str) -> list[str]:
    """jiwer's default word transform: runs of whitespace become one space, then strip, then split on spaces."""
    return [word for word in _WHITESPACE_RUN.sub(" ", text).strip().split(" ") if word]


def edit_distance(reference: Sequence[str], hypothesis: Sequence[str]) -> int:
    """Word-level Levenshtein distance: the fewest substitutions, deletions and insertions turning one into the
    other (jiwer counts S + D + I of such an alignment)."""
    costs = list(range(len(hypothesis) + 1))  # row for the empty reference prefix
    for i, ref_word in enumerate(reference, 1):
        diagonal, costs[0] = costs[0], i
        for j, hyp_word in enumerate(hypothesis, 1):
            above = costs[j]
            costs[j] = min(above + 1, costs[j - 1] + 1, diagonal + (ref_word != hyp_word))
            diagonal = above
    return costs[-1]


def utterance_wer(truth: str, hypothesis: str, lang: str = "en") -> tuple[float, int, int]:
    """F5-TTS's WER of one utterance, with (word errors, reference words) for pooled figures.

    An empty reference gives the number of inserted words (jiwer 4.0's rule), not a ratio.
    """
    ref = split_words(normalize(truth, lang))
    hyp = split_words(normalize(hypothesis, lang))
    errors = edit_distance(ref, hyp)
    return (errors / len(ref) if ref else float(errors)), errors, len(ref)
