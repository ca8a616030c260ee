"""Text side of the F5-TTS speech stream: the checkpoint's vocabulary, tokenisation and duration estimate.

F5-TTS conventions followed here:

* The vocabulary is the checkpoint's ``vocab.txt``: one token per line, the line number is the token id;
  id 0 is the space " ". Tokens are single characters or, for Chinese, pinyin syllables with a tone digit.
* Batches are right-padded with :data:`PAD_ID` (-1). The DiT adds 1 to every id, so padding becomes
  embedding row 0, the *filler* token, which also fills the text up to the mel length. Hence a model for
  a vocabulary of ``n`` tokens has ``n + 1`` text-embedding rows.
* F5-TTS silently maps characters missing from the vocabulary to id 0 (space). Here that is an error
  listing the characters, unless ``on_unknown="space"`` asks for the F5-TTS behaviour.
* The released Base models use the "pinyin" tokenizer: text is segmented with rjieba, Chinese characters
  become " " + a TONE3 pinyin syllable (pypinyin), everything else stays character by character. That
  needs the optional ``zh`` extra (``pip install mmflow-audio-f5tts[zh]``).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import torch

from .mel import HOP_LENGTH

logger = logging.getLogger(__name__)

PAD_ID = -1
"""Batch padding id; the DiT shifts ids by +1, turning it into the filler embedding row 0."""
SPACE_TOKEN = " "
VOCAB_FILENAME = "vocab.txt"
SHORT_TEXT_BYTES = 10
"""F5-TTS treats generated text shorter than this many UTF-8 bytes as "short" and slows it down."""
SHORT_TEXT_SPEED = 0.3
"""Speed factor F5-TTS forces for short generated text (so a few characters still get time to be spoken)."""

_ZH_EXTRA_HINT = "install the optional Chinese support with `pip install mmflow-audio-f5tts[zh]`"
_PUNCTUATION_MAP = str.maketrans({";": ",", "\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'"})

OnUnknown = Literal["error", "space"]
TokenizerMode = Literal["pinyin", "char"]


class UnknownTokenError(ValueError):
    """Text contains tokens the checkpoint's vocabulary does not have."""


def _is_chinese(char: str) -> bool:
    # F5-TTS's range: bopomofo through the CJK unified ideographs block.
    return "\u3100" <= char <= "\u9fff"


class Vocab:
    """Token ↔ id table read from a checkpoint's ``vocab.txt``.

    Args:
        tokens: the tokens in id order (``tokens[i]`` has id ``i``).
        source: where they came from, used in error messages.
    """

    def __init__(self, tokens: Sequence[str], *, source: str = "<in-memory vocab>") -> None:
        self.tokens: tuple[str, ...] = tuple(tokens)
        self.source = source
        if not self.tokens:
            raise ValueError(f"{source}: the vocabulary is empty")
        duplicates = sorted(token for token, count in Counter(self.tokens).items() if count > 1)
        if duplicates:
            raise ValueError(
                f"{source}: duplicate tokens {duplicates!r}; every line of vocab.txt must be unique"
            )
        if "" in self.tokens:
            raise ValueError(
                f"{source}: line {self.tokens.index('') + 1} is empty; remove blank lines from vocab.txt"
            )
        self._ids = {token: i for i, token in enumerate(self.tokens)}
        if self.tokens[0] != SPACE_TOKEN:
            # F5-TTS relies on id 0 being the space (unknown characters fall back to it); warn, don't fail.
            logger.warning(
                "%s: token 0 is %r, not a space as F5-TTS vocabularies have", source, self.tokens[0]
            )

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Vocab:
        """Read ``vocab.txt`` (UTF-8, one token per line) from a file path or a model folder containing it."""
        path = Path(path)
        if path.is_dir():
            path = path / VOCAB_FILENAME
        if not path.is_file():
            raise FileNotFoundError(
                f"vocabulary file not found: {path}; pass the checkpoint's {VOCAB_FILENAME} or its folder"
            )
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            raise ValueError(
                f"{path}: not UTF-8 text ({error}); expected an F5-TTS {VOCAB_FILENAME}"
            ) from error
        # Split on "\n" only: the first token is a space, so no other whitespace may be stripped.
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        return cls(lines, source=str(path))

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: object) -> bool:
        return token in self._ids

    def __repr__(self) -> str:
        return f"Vocab({len(self)} tokens from {self.source})"

    @property
    def num_embeddings(self) -> int:
        """Rows of the DiT text embedding: the tokens plus the filler row 0."""
        return len(self) + 1

    def id(self, token: str) -> int:
        """The id of one token; raises :class:`UnknownTokenError` if it is not in the vocabulary."""
        try:
            return self._ids[token]
        except KeyError:
            raise UnknownTokenError(f"{self.source}: token {token!r} is not in the vocabulary") from None

    def unknown(self, tokens: Iterable[str]) -> list[str]:
        """Tokens of ``tokens`` the vocabulary lacks, each once, in order of appearance."""
        return list(dict.fromkeys(t for t in tokens if t not in self._ids))

    def encode(self, tokens: Sequence[str], *, on_unknown: OnUnknown = "error") -> list[int]:
        """Map tokens to ids.

        ``on_unknown="error"`` (default) raises :class:`UnknownTokenError` listing every missing token;
        ``"space"`` maps them to id 0 as F5-TTS does silently (logged at warning level here).
        """
        missing = self.unknown(tokens)
        if missing:
            if on_unknown == "error":
                raise UnknownTokenError(self._unknown_message(missing))
            if on_unknown != "space":
                raise ValueError(f"encode: on_unknown must be 'error' or 'space', got {on_unknown!r}")
            logger.warning(
                "%s; mapping them to the space token as F5-TTS does", self._unknown_message(missing)
            )
        return [self._ids.get(t, 0) for t in tokens]

    def batch_encode(
        self, token_lists: Sequence[Sequence[str]], *, on_unknown: OnUnknown = "error"
    ) -> torch.Tensor:
        """Encode several token lists into a ``[B, max_len]`` int64 tensor right-padded with :data:`PAD_ID`."""
        if isinstance(token_lists, str) or not token_lists:
            raise ValueError("batch_encode: expected a non-empty list of token lists (see Vocab.tokenize)")
        rows = [self.encode(tokens, on_unknown=on_unknown) for tokens in token_lists]
        out = torch.full((len(rows), max(len(r) for r in rows)), PAD_ID, dtype=torch.long)
        for i, row in enumerate(rows):
            out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        return out

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Ids back to tokens, skipping :data:`PAD_ID` (for inspection and tests)."""
        return [self.tokens[int(i)] for i in ids if int(i) != PAD_ID]

    def tokenize(self, text: str, *, mode: TokenizerMode = "pinyin") -> list[str]:
        """Text to tokens with the F5-TTS convention named by ``mode`` (see :func:`tokenize`)."""
        return tokenize(text, mode=mode)

    def _unknown_message(self, missing: list[str]) -> str:
        message = f"{len(missing)} token(s) not in the vocabulary {self.source}: {missing!r}"
        if any(_is_chinese(ch) for token in missing for ch in token):
            message += f"; Chinese text needs mode='pinyin' ({_ZH_EXTRA_HINT})"
        return (
            message
            + "; rewrite or remove them, or pass on_unknown='space' to map them to a space like F5-TTS"
        )


def tokenize(text: str, *, mode: TokenizerMode = "pinyin") -> list[str]:
    """Split text into vocabulary tokens.

    * ``"pinyin"`` — F5-TTS's ``convert_char_to_pinyin`` convention, used by the released Base models:
      ``;`` → ``,`` and curly quotes → straight ones; rjieba segments the text; a space token is inserted
      before a multi-character ASCII segment unless the previous token is one of `` :'"``; Chinese
      characters become " " + TONE3 pinyin (with tone sandhi); all else stays character by character.
      Needs the ``zh`` extra even for non-Chinese text, because the segmentation decides those spaces.
    * ``"char"`` — one token per character (F5-TTS's "char" tokenizer); needs nothing extra.
    """
    if mode == "char":
        return list(text)
    if mode != "pinyin":
        raise ValueError(f"tokenize: mode must be 'pinyin' or 'char', got {mode!r}")
    segment, lazy_pinyin, tone3 = _load_zh()
    text = text.translate(_PUNCTUATION_MAP)
    tokens: list[str] = []
    for seg in segment(text):
        n_bytes = len(seg.encode("utf-8"))
        if n_bytes == len(seg):  # ASCII only
            if tokens and n_bytes > 1 and tokens[-1] not in " :'\"":
                tokens.append(SPACE_TOKEN)
            tokens.extend(seg)
        elif n_bytes == 3 * len(seg):  # all three-byte characters: Chinese (and other BMP scripts)
            syllables = lazy_pinyin(seg, style=tone3, tone_sandhi=True)
            for char, syllable in zip(seg, syllables, strict=True):
                if _is_chinese(char):
                    tokens.append(SPACE_TOKEN)
                tokens.append(syllable)
        else:  # mixed
            for char in seg:
                if ord(char) < 256:
                    tokens.append(char)
                elif _is_chinese(char):
                    tokens.append(SPACE_TOKEN)
                    tokens.extend(lazy_pinyin(char, style=tone3, tone_sandhi=True))
                else:
                    tokens.append(char)
    return tokens


def _load_zh():  # noqa: ANN202 - returns third-party callables
    try:
        import rjieba
        from pypinyin import Style, lazy_pinyin
    except ImportError as error:
        raise ImportError(
            f"the 'pinyin' tokenizer (F5-TTS's text convention) needs rjieba and pypinyin ({error}); "
            f"{_ZH_EXTRA_HINT}, or use mode='char' for text without Chinese"
        ) from error
    return rjieba.cut, lazy_pinyin, Style.TONE3


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))


def _ref_text_as_prompted(ref_text: str) -> str:
    # F5-TTS appends a space to the reference text when it ends in a one-byte character.
    return ref_text + " " if _utf8_len(ref_text[-1]) == 1 else ref_text


def prompt_text(ref_text: str, gen_text: str) -> str:
    """The text the model conditions on: reference text (plus a space if it ends in ASCII) + text to say."""
    if not ref_text:
        raise ValueError("prompt_text: ref_text is empty; give the transcript of the reference audio")
    return _ref_text_as_prompted(ref_text) + gen_text


def estimate_duration(ref_frames: int, ref_text: str, gen_text: str, *, speed: float = 1.0) -> int:
    """Total mel frames (reference + generated) to sample, estimated as F5-TTS inference does.

    ``ref_frames`` is ``reference_samples // 256`` (F5-TTS's count, one less than the mel frame count).
    The generated part gets ``ref_frames / bytes(ref_text) · bytes(gen_text) / speed`` frames, lengths in
    UTF-8 bytes, the reference text counted with the space F5-TTS appends after a one-byte final
    character; ``speed`` is forced to 0.3 when ``gen_text`` has fewer than 10 bytes.
    """
    if ref_frames <= 0:
        raise ValueError(f"estimate_duration: ref_frames must be positive, got {ref_frames}")
    if not ref_text:
        raise ValueError("estimate_duration: ref_text is empty; give the transcript of the reference audio")
    if speed <= 0:
        raise ValueError(f"estimate_duration: speed must be positive, got {speed}")
    if _utf8_len(gen_text) < SHORT_TEXT_BYTES:
        speed = SHORT_TEXT_SPEED
    ref_bytes = _utf8_len(_ref_text_as_prompted(ref_text))
    return ref_frames + int(ref_frames / ref_bytes * _utf8_len(gen_text) / speed)


def reference_frames(num_samples: int) -> int:
    """F5-TTS's reference length in frames for ``estimate_duration``: ``num_samples // 256``."""
    if num_samples < 0:
        raise ValueError(f"reference_frames: num_samples must be >= 0, got {num_samples}")
    return num_samples // HOP_LENGTH


def filler_frames(ref_samples: int, ref_text: str, gen_text: str, num_ids: int, speed: float = 1.0) -> int:
    """Mel frames to generate after a reference of ``ref_samples`` samples for filler-padded text (F5-TTS).

    F5-TTS's estimate (``estimate_duration``), made long enough that the sample outlasts both its ``num_ids``
    text tokens and the reference's mel frames (the centred STFT gives one frame more than ``reference_frames``).
    """
    ref_frames = reference_frames(ref_samples)
    cond_frames = ref_frames + 1
    total = estimate_duration(ref_frames, ref_text, gen_text, speed=speed)
    return max(total, max(num_ids, cond_frames) + 1) - cond_frames
