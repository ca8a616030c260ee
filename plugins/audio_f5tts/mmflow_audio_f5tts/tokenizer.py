"""F5-TTS's text vocabulary as a ``transformers`` tokenizer, so a pipeline saves and reloads it with its model.

The tokenizer reads and writes the checkpoint's own ``vocab.txt`` unchanged (one token per line, token 0 the
space) and tokenizes with F5-TTS's conventions (:func:`~.text.tokenize`: ``"pinyin"`` for the released Base
models, ``"char"`` otherwise). Ids are the vocabulary's; the DiT's text embedding adds the filler row itself.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from transformers import PreTrainedTokenizer

from .text import VOCAB_FILENAME, TokenizerMode, Vocab, tokenize


class F5Tokenizer(PreTrainedTokenizer):
    """Text → F5-TTS vocabulary ids (no special tokens, spaces kept: the space is a token).

    Args:
        vocab_file: The checkpoint's ``vocab.txt``.
        tokenizer_mode: ``"pinyin"`` (F5-TTS Base models; needs the ``zh`` extra) or ``"char"``.
        on_unknown: ``"error"`` (default: unknown characters raise, naming them) or ``"space"`` (F5-TTS's
            silent mapping to id 0).
    """

    vocab_files_names = {"vocab_file": VOCAB_FILENAME}
    model_input_names = ["input_ids"]

    def __init__(self, vocab_file: str, tokenizer_mode: TokenizerMode = "pinyin", on_unknown: str = "error", **kwargs):
        if tokenizer_mode not in ("pinyin", "char"):
            raise ValueError(f"tokenizer_mode must be 'pinyin' or 'char', got {tokenizer_mode!r}")
        self.vocab = Vocab.from_file(vocab_file)
        self.tokenizer_mode, self.on_unknown = tokenizer_mode, on_unknown
        super().__init__(tokenizer_mode=tokenizer_mode, on_unknown=on_unknown, **kwargs)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def get_vocab(self) -> dict[str, int]:
        return {token: i for i, token in enumerate(self.vocab.tokens)}

    def _tokenize(self, text: str, **kwargs) -> list[str]:
        return tokenize(text, mode=self.tokenizer_mode)

    def _convert_token_to_id(self, token: str) -> int:
        return self.vocab.encode([token], on_unknown=self.on_unknown)[0]

    def _convert_id_to_token(self, index: int) -> str:
        return self.vocab.tokens[index]

    def encode_text(self, text: str) -> list[int]:
        """Ids of ``text``; unknown characters are reported all at once (or mapped to a space, see ``on_unknown``)."""
        return self.vocab.encode(self._tokenize(text), on_unknown=self.on_unknown)

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str]:
        path = Path(save_directory) / ((filename_prefix + "-" if filename_prefix else "") + VOCAB_FILENAME)
        path.write_text("".join(token + "\n" for token in self.vocab.tokens), encoding="utf-8")
        return (str(path),)

    @classmethod
    def from_vocab_file(cls, path: str | os.PathLike[str], **kwargs) -> F5Tokenizer:
        """From a ``vocab.txt`` or a checkpoint folder holding one."""
        path = Path(path)
        return cls(str(path / VOCAB_FILENAME if path.is_dir() else path), **kwargs)


PHONEME_VOCAB_FILENAME = "phonemes.txt"


@functools.lru_cache(maxsize=256)
def _spoken_timing(text: str, voice) -> tuple[tuple, int]:
    """espeak-ng's phones for ``text`` and its length in mel frames. Cached: a pipeline asks for the natural
    duration and then for the ids at that duration, and espeak is deterministic."""
    from .espeak import EspeakEngine
    from .mel import num_frames

    spoken = EspeakEngine().synthesize(text, voice)
    return tuple(spoken.phones), num_frames(spoken.waveform.shape[-1])


class PhonemeTokenizer(PreTrainedTokenizer):
    """Text → one espeak-ng phoneme id per mel frame (time-aligned text conditioning, ``aligned = True``).

    espeak-ng speaks the text with the configured voice and reports when each phoneme starts; every mel frame
    (93.75 per second) gets the phoneme active at its centre. So the ids also fix the duration of the speech
    to generate; ``frame_ids(text, num_frames)`` stretches the timing to a given length (dubbing, editing).
    Needs the ``espeak`` extra (``pip install mmflow-audio-f5tts[espeak]``).

    Args:
        vocab_file: ``phonemes.txt`` (one espeak mnemonic per line, see :class:`~.phonemes.PhonemeVocab`).
        voice, rate, pitch: The espeak-ng voice whose timing the model was trained on.
    """

    vocab_files_names = {"vocab_file": PHONEME_VOCAB_FILENAME}
    model_input_names = ["input_ids"]
    aligned = True

    def __init__(self, vocab_file: str, voice: str = "en-us", rate: int = 165, pitch: int = 50, **kwargs):
        from .espeak import Voice
        from .phonemes import PhonemeVocab

        self.vocab = PhonemeVocab.from_file(vocab_file)
        self.espeak_voice = Voice(voice, rate, pitch)
        super().__init__(voice=voice, rate=rate, pitch=pitch, **kwargs)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def get_vocab(self) -> dict[str, int]:
        return {symbol: i for i, symbol in enumerate(self.vocab.symbols)}

    def frame_ids(self, text: str, num_frames: int | None = None, speed: float = 1.0):
        """Phoneme id per mel frame (int64 numpy); ``num_frames`` stretches the spoken timing to that length."""
        from .mel import FRAME_RATE
        from .phonemes import frame_phoneme_ids

        phones, natural = _spoken_timing(text, self.espeak_voice)
        target = natural if num_frames is None else int(num_frames)
        if speed != 1.0 and num_frames is None:
            target = max(1, round(natural / speed))
        if target < 1:
            raise ValueError(f"frame_ids: num_frames must be >= 1, got {num_frames}")
        return frame_phoneme_ids(phones, target, self.vocab, FRAME_RATE * target / natural)

    def _tokenize(self, text: str, **kwargs) -> list[str]:
        return self.vocab.decode(self.frame_ids(text))

    def _convert_token_to_id(self, token: str) -> int:
        return self.vocab.encode([token])[0]

    def _convert_id_to_token(self, index: int) -> str:
        return self.vocab.symbols[index]

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str]:
        path = Path(save_directory) / ((filename_prefix + "-" if filename_prefix else "") + PHONEME_VOCAB_FILENAME)
        self.vocab.save(path)
        return (str(path),)
