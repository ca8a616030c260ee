"""Vocabulary, tokenisation and duration estimate against the F5-TTS conventions."""

from __future__ import annotations

import logging
import sys

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

# A small vocabulary in the F5-TTS layout: space first, then punctuation, letters, pinyin syllables.
TOKENS = [" ", "!", ",", ".", "'", "?", *"abcdefghijklmnopqrstuvwxyz", *"HIW", "ni2", "hao3", "shi4", "jie4"]
PINYIN_CASES = [
    "Hello, world.",
    "hello,world",
    "(hello) well-known; e.g. 3.5% “quoted” ‘single’",
    "你好世界。",
    "Hello 你好, world.",
    "中文Chinese混合。",
    "Café résumé — naïve",
    "こんにちは 한국어",
]


@pytest.fixture
def vocab_dir(tmp_path):
    (tmp_path / "vocab.txt").write_text("\n".join(TOKENS) + "\n", encoding="utf-8")
    return tmp_path


def test_reads_vocab_from_folder_or_file(vocab_dir):
    from_folder = Vocab.from_file(vocab_dir)
    from_file = Vocab.from_file(vocab_dir / "vocab.txt")
    assert from_folder.tokens == from_file.tokens == tuple(TOKENS)
    assert len(from_folder) == len(TOKENS) and from_folder.num_embeddings == len(TOKENS) + 1
    assert from_folder.id(" ") == 0 and from_folder.id("hao3") == TOKENS.index("hao3")
    assert "ni2" in from_folder and "xx" not in from_folder


def test_vocab_reading_matches_f5_tts_for_a_newline_terminated_file(vocab_dir, f5_reference):
    # F5-TTS: vocab_char_map[line[:-1]] = line_number
    with open(vocab_dir / "vocab.txt", encoding="utf-8") as handle:
        reference = {line[:-1]: i for i, line in enumerate(handle)}
    vocab = Vocab.from_file(vocab_dir)
    assert {t: vocab.id(t) for t in vocab.tokens} == reference


def test_last_line_without_newline_keeps_its_token(tmp_path):
    (tmp_path / "vocab.txt").write_text(" \na\nb", encoding="utf-8")
    assert Vocab.from_file(tmp_path).tokens == (" ", "a", "b")


def test_bad_vocab_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"vocab\.txt"):
        Vocab.from_file(tmp_path)
    (tmp_path / "vocab.txt").write_text(" \na\nb\na\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"duplicate tokens \['a'\]"):
        Vocab.from_file(tmp_path)
    (tmp_path / "vocab.txt").write_text(" \na\n\nb\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 3 is empty"):
        Vocab.from_file(tmp_path)
    (tmp_path / "vocab.txt").write_bytes(b" \n\xff\xfe\n")
    with pytest.raises(ValueError, match="not UTF-8"):
        Vocab.from_file(tmp_path)


def test_batch_encoding_pads_with_minus_one_like_f5(vocab_dir, f5_reference):
    vocab = Vocab.from_file(vocab_dir)
    texts = [list("hi there."), list("ok"), list("what?!")]
    batch = vocab.batch_encode(texts)
    assert batch.dtype == torch.long and batch.shape == (3, 9)
    assert PAD_ID == -1 and batch[1, 2:].eq(-1).all()
    reference = f5_reference.list_str_to_idx(texts, {t: i for i, t in enumerate(TOKENS)})
    assert torch.equal(batch, reference)
    assert vocab.decode(batch[1]) == ["o", "k"]


def test_unknown_characters_error_lists_them(vocab_dir):
    vocab = Vocab.from_file(vocab_dir)
    with pytest.raises(
        UnknownTokenError, match=r"2 token\(s\) not in the vocabulary .*\['Z', '#'\].*on_unknown='space'"
    ):
        vocab.encode(list("Zap #Z"))
    with pytest.raises(UnknownTokenError, match=r"mode='pinyin'.*mmflow-audio-f5tts\[zh\]"):
        vocab.encode(list("你"))


def test_unknown_fallback_maps_to_space_like_f5(vocab_dir, f5_reference, caplog):
    vocab = Vocab.from_file(vocab_dir)
    tokens = list("Zap #hi")
    with caplog.at_level(logging.WARNING, logger=text_module.__name__):
        ids = vocab.encode(tokens, on_unknown="space")
    assert ids == f5_reference.list_str_to_idx([tokens], {t: i for i, t in enumerate(TOKENS)})[0].tolist()
    assert ids[0] == 0 and "['Z', '#']" in caplog.text
    with pytest.raises(ValueError, match="on_unknown must be"):
        vocab.encode(["Z"], on_unknown="drop")


def test_char_mode_needs_no_extras():
    assert tokenize("Hi, 你", mode="char") == ["H", "i", ",", " ", "你"]
    with pytest.raises(ValueError, match="mode must be"):
        tokenize("x", mode="bytes")


@pytest.mark.parametrize("text", PINYIN_CASES)
def test_pinyin_tokenizer_matches_f5(f5_reference, text):
    pytest.importorskip("pypinyin")
    pytest.importorskip("rjieba")
    assert tokenize(text) == f5_reference.convert_char_to_pinyin([text])[0]


def test_pinyin_tokens_encode_with_the_vocab(vocab_dir):
    pytest.importorskip("pypinyin")
    pytest.importorskip("rjieba")
    vocab = Vocab.from_file(vocab_dir)
    tokens = vocab.tokenize("Hi 你好!")
    assert tokens == ["H", "i", " ", " ", "ni2", " ", "hao3", "!"]  # tone sandhi: ni3 -> ni2
    assert vocab.decode(vocab.encode(tokens)) == tokens


def test_missing_zh_extra_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "rjieba", None)  # makes `import rjieba` raise ImportError
    with pytest.raises(ImportError, match=r"pip install mmflow-audio-f5tts\[zh\].*mode='char'"):
        tokenize("你好")


DURATION_CASES = [
    # (reference samples, reference text, generated text, speed)
    (
        24_000 * 5 + 100,
        "Some call me nature, others call me mother nature.",
        "I don't really care what you call me.",
        1.0,
    ),
    (24_000 * 3, "Hello there.", "A somewhat longer sentence to say.", 0.8),
    (24_000 * 4, "Short one.", "Hi!", 1.0),  # < 10 bytes: speed forced to 0.3
    (24_000 * 6, "对，这就是我，万人敬仰的太乙真人。", "突然，身边一阵笑声。我看着他们。", 1.0),
    (24_000 * 6, "Hello, 你好。", "Mixed text 混合的内容 here.", 1.3),
]


@pytest.mark.parametrize(("samples", "ref_text", "gen_text", "speed"), DURATION_CASES)
def test_duration_and_prompt_text_match_f5_inference(
    f5_infer_batch_process, samples, ref_text, gen_text, speed
):
    captured = {}

    class RecordingModel:
        def sample(self, cond, text, duration, **kwargs):
            captured.update(text=text, duration=duration)
            return torch.zeros(1, duration, 100), None

    class SilentVocoder:
        def decode(self, mel):
            return torch.zeros(1, mel.shape[-1] * 256)

    wave = 0.1 * torch.randn(1, samples, generator=torch.Generator().manual_seed(0))
    next(
        f5_infer_batch_process(
            (wave, 24_000),
            ref_text,
            [gen_text],
            RecordingModel(),
            SilentVocoder(),
            progress=None,
            device="cpu",
            speed=speed,
        )
    )
    assert (
        estimate_duration(reference_frames(samples), ref_text, gen_text, speed=speed) == captured["duration"]
    )
    assert [tokenize(prompt_text(ref_text, gen_text))] == captured["text"]


def test_duration_rejects_bad_arguments():
    with pytest.raises(ValueError, match="ref_frames must be positive"):
        estimate_duration(0, "a", "b")
    with pytest.raises(ValueError, match="ref_text is empty"):
        estimate_duration(10, "", "b")
    with pytest.raises(ValueError, match="speed must be positive"):
        estimate_duration(10, "a", "b", speed=0)
    assert estimate_duration(100, "abcd", "a longer text", speed=1.0) == 100 + int(100 / 5 * 13)
