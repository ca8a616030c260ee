"""The text front end by value where the mutation study (benchmarks/mutation.py) found it unguarded: the
Chinese range, segments that mix scripts, the space rule, the vocabulary's messages and batch encoding, the
duration estimate's defaults and boundaries."""

from __future__ import annotations

import logging

import pytest
import torch
from mmflow_audio_f5tts import text as text_module
from mmflow_audio_f5tts.text import (
    PAD_ID,
    UnknownTokenError,
    Vocab,
    estimate_duration,
    prompt_text,
    reference_frames,
    tokenize,
)

VOCAB = [" ", "a", "b", "X", ",", "ni3", "hao3"]


def test_chinese_range_is_bopomofo_to_the_unified_ideographs():
    assert text_module._is_chinese("\u3100") and text_module._is_chinese("\u9fff")
    assert not text_module._is_chinese("\u30ff") and not text_module._is_chinese("\ua000")


@pytest.fixture
def segments(monkeypatch):
    """Make the segmenter return the given segments, so each branch of tokenize is reached on purpose."""
    pytest.importorskip("pypinyin")
    pytest.importorskip("rjieba")
    chosen = []
    segment, lazy_pinyin, tone3 = text_module._load_zh()
    monkeypatch.setattr(text_module, "_load_zh", lambda: (lambda text: list(chosen), lazy_pinyin, tone3))
    return chosen


def test_a_mixed_segment_spells_chinese_in_pinyin_and_keeps_the_rest(segments):
    segments.extend(["é你Ωü好"])
    assert tokenize("é你Ωü好") == ["é", " ", "ni3", "Ω", "ü", " ", "hao3"]


def test_a_space_goes_before_a_multi_character_ascii_segment(segments):
    segments.extend(["X", "ab", "'", "ab", ":", "b", "ab"])
    assert tokenize("Xab'ab:bab") == ["X", " ", "a", "b", "'", "a", "b", ":", "b", " ", "a", "b"]


def test_prompt_text_adds_a_space_after_a_one_byte_final_character():
    assert prompt_text("你a", "x") == "你a x"
    assert prompt_text("a你", "x") == "a你x"


def test_duration_defaults_and_boundaries():
    assert estimate_duration(100, "abcd", "a longer text") == 100 + int(100 / 5 * 13)  # default speed 1
    assert estimate_duration(1, "abcd", "a longer text") == 1 + int(1 / 5 * 13)
    ten = "0123456789"  # 10 bytes: not short, speed stays 1
    assert estimate_duration(100, "abcd", ten) == 100 + int(100 / 5 * 10)
    assert estimate_duration(100, "abcd", ten[:9]) == 100 + int(100 / 5 * 9 / 0.3)
    assert reference_frames(0) == 0 and reference_frames(511) == 1


def test_vocab_names_its_source_and_warns_without_a_leading_space(tmp_path, caplog):
    assert repr(Vocab(VOCAB)) == "Vocab(7 tokens from <in-memory vocab>)"
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    assert Vocab.from_file(path).source == str(path)
    with caplog.at_level(logging.WARNING):
        Vocab(VOCAB)
    assert not caplog.records
    with caplog.at_level(logging.WARNING):
        Vocab(["a", " "])
    assert "token 0 is 'a'" in caplog.text


def test_unknown_token_message():
    with pytest.raises(UnknownTokenError) as error:
        Vocab(VOCAB).encode(["a", "你", "q"])
    message = str(error.value)
    assert message.startswith("2 token(s) not in the vocabulary <in-memory vocab>: ['你', 'q']")
    assert "Chinese text needs mode='pinyin'" in message
    assert message.endswith("; rewrite or remove them, or pass on_unknown='space' to map them to a space like F5-TTS")


def test_batch_encode_rules():
    vocab = Vocab(VOCAB)
    out = vocab.batch_encode([["a", "b"], ["X"]])
    assert out.dtype == torch.long and out.tolist() == [[1, 2], [3, PAD_ID]]
    with pytest.raises(UnknownTokenError):
        vocab.batch_encode([["a", "q"]])
    assert vocab.batch_encode([["a", "q"]], on_unknown="space").tolist() == [[1, 0]]
    for bad in ("ab", []):
        with pytest.raises(ValueError, match="non-empty list of token lists"):
            vocab.batch_encode(bad)
    assert vocab.tokenize("你a", mode="char") == ["你", "a"]


def test_filler_frames_by_hand():
    from mmflow_audio_f5tts.text import filler_frames

    samples = 256 * 100 + 5  # 100 reference frames for the estimate, 101 mel frames of reference
    estimate = 100 + int(100 / 5 * 13)  # "abcd" counts 5 bytes with its appended space, 13 bytes to say
    assert filler_frames(samples, "abcd", "a longer text", num_ids=10) == estimate - 101
    assert filler_frames(samples, "abcd", "a longer text", num_ids=10, speed=2.0) == 100 + int(100 / 5 * 13 / 2) - 101
    assert filler_frames(samples, "abcd", "a longer text", num_ids=500) == 501 - 101  # outlasts the tokens
    assert filler_frames(samples, "abcd", "", num_ids=10) == 1  # outlasts the reference by one frame
