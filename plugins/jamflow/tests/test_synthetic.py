"""The synthetic speech + face-motion corpus: visemes, sentences and the dataset builder."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
from mmflow_audio_f5tts.sentences import (
    HELD_OUT_SENTENCES,
    SentenceGenerator,
    generate_sentences,
    vocabulary,
    word_count,
    words_of,
)
from mmflow_jamflow.data.visemes import (
    EYE_KEYPOINT_INDICES,
    FRAME_RATE,
    INERT_KEYPOINT_INDICES,
    articulation_from_phones,
    blink_times,
    motion_from_phones,
    openness_from_phones,
    speaker_style,
    visemes_for,
)
from mmflow_motion_liveportrait.keypoints import MOUTH_KEYPOINT_INDICES
from mmflow_motion_liveportrait.render import mouth_opening_from_expression


def _phones(spec: str, start: float = 0.0) -> list[tuple[str, float, float]]:
    """``"_:0.3 m:0.08 A::0.2"`` → contiguous ``(symbol, start, end)`` spans (the last colon splits)."""
    phones, t = [], start
    for item in spec.split():
        symbol, duration = item.rsplit(":", 1)
        phones.append((symbol, t, t + float(duration)))
        t += float(duration)
    return phones


# "_ mama, pa! _ bob _ see you" with long, clear phones.
PHONES = _phones("_:0.40 m:0.08 'A::0.20 m:0.08 A::0.20 _:0.40 p:0.06 'aa:0.22 _:0.40 b:0.06 0:0.18 b:0.07 _:0.50 "
                 "s:0.12 'i::0.20 j:0.06 u::0.22 _:0.50")
SECONDS = PHONES[-1][2]
FRAMES = int(round(SECONDS * FRAME_RATE))


def _frame_values(curve: np.ndarray, start: float, end: float, pad: float = 0.0) -> np.ndarray:
    times = np.arange(len(curve)) / FRAME_RATE
    return curve[(times >= start - pad) & (times <= end + pad)]


# ------------------------------------------------------------------------------------------------------------
# visemes
# ------------------------------------------------------------------------------------------------------------


def test_viseme_classes():
    assert visemes_for("m")[0].openness == visemes_for("b")[0].openness == visemes_for("p")[0].openness == 0
    assert visemes_for("_:")[0].name == visemes_for("")[0].name == "pause"
    assert visemes_for("'A:")[0].openness >= 0.7  # stress marks are ignored
    assert visemes_for("u:")[0].rounding > 0.8 and visemes_for("i:")[0].spread > 0.5
    assert len(visemes_for("aI")) == 2  # diphthongs glide between two targets
    assert visemes_for("I2#")[0].name == visemes_for("I")[0].name  # unknown → longest known prefix


def test_mouth_closes_on_bilabials_and_pauses_and_opens_on_open_vowels():
    openness = openness_from_phones(PHONES, FRAMES)
    assert openness.shape == (FRAMES,) and openness.dtype == np.float32
    for symbol, start, end in PHONES:
        values = _frame_values(openness, start, end, pad=0.01)
        if symbol in ("m", "p", "b"):
            assert values.min() < 0.1, (symbol, start, values)
        elif symbol == "_:" and end - start >= 0.4:
            assert values.min() < 0.02, (symbol, start, values)
        elif symbol.lstrip("'") in ("A:", "aa", "0"):
            assert values.max() > 0.6, (symbol, start, values)
    assert openness[0] < 0.02 and openness[-1] < 0.02


def test_coarticulation_is_smooth_not_a_step_function():
    tracks = articulation_from_phones(PHONES, FRAMES)
    openness = tracks[:, 0]
    assert len(np.unique(np.round(openness, 3))) > FRAMES // 3  # not a handful of plateau values
    assert np.abs(np.diff(openness)).max() < 0.6
    # Anticipatory rounding: the lips round during "j" before "u:".
    _, j_start, j_end = next(p for p in PHONES if p[0] == "j")
    assert _frame_values(tracks[:, 2], j_start, j_end, pad=0.02).max() > 0.3


def test_renderer_reads_the_openness_curve_from_the_expression():
    exp = motion_from_phones(PHONES, FRAMES, seed=3, speaker=2)
    assert exp.shape == (FRAMES, 21, 3) and exp.dtype == np.float32
    opening = mouth_opening_from_expression(exp)
    target = openness_from_phones(PHONES, FRAMES)
    assert np.corrcoef(opening, target)[0, 1] > 0.95
    np.testing.assert_allclose(opening, target, atol=1e-3)


def test_motion_is_deterministic_and_seeded():
    a = motion_from_phones(PHONES, FRAMES, seed=1, speaker=0)
    np.testing.assert_array_equal(a, motion_from_phones(PHONES, FRAMES, seed=1, speaker=0))
    b = motion_from_phones(PHONES, FRAMES, seed=2, speaker=0)
    assert not np.array_equal(a, b)
    # The mouth is decided by the phones (and speaker), not by the clip seed.
    mouth = list(MOUTH_KEYPOINT_INDICES)
    np.testing.assert_array_equal(a[:, mouth], b[:, mouth])
    assert np.all(a[:, list(INERT_KEYPOINT_INDICES)] == 0)


def test_speakers_have_their_own_neutral_face_with_a_closed_mouth():
    neutral = [speaker_style(s).neutral for s in range(4)]
    assert all(not np.allclose(neutral[0], other) for other in neutral[1:])
    silent = [("_", 0.0, 2.0)]
    for speaker in range(4):
        exp = motion_from_phones(silent, 50, seed=0, speaker=speaker)
        assert mouth_opening_from_expression(exp).max() < 1e-3


def test_blinks_every_two_to_six_seconds():
    onsets = blink_times(60.0, np.random.default_rng(0))
    gaps = np.diff(onsets)
    assert len(onsets) >= 10 and gaps.min() >= 2.0 and gaps.max() <= 6.0

    frames = int(30 * FRAME_RATE)
    exp = motion_from_phones([("_", 0.0, 30.0)], frames, seed=5, speaker=1)
    eye = exp[:, EYE_KEYPOINT_INDICES[0], 1]
    closed = eye - np.median(eye) > 0.01  # eyelid keypoint moved by over half its blink travel
    blinks = int(np.sum(closed[1:] & ~closed[:-1]) + closed[0])
    assert 4 <= blinks <= 16
    assert closed.mean() < 0.1  # eyes are open most of the time


# ------------------------------------------------------------------------------------------------------------
# sentences
# ------------------------------------------------------------------------------------------------------------


def test_sentences_are_deterministic_plain_and_varied():
    first = generate_sentences(200, seed=7)
    assert first == generate_sentences(200, seed=7)
    assert first != generate_sentences(200, seed=8)
    assert len(set(first)) == 200
    counts = [word_count(s) for s in first]
    assert min(counts) >= 3 and max(counts) <= 20 and len(set(counts)) >= 12
    assert not any(re.search(r"\d", s) for s in first)
    assert all(s[0].isupper() and s[-1] in ".?!" for s in first)
    assert SentenceGenerator("a", 5, 8).sentence() == SentenceGenerator("a", 5, 8).sentence()


def test_held_out_sentences_are_never_generated():
    assert len(HELD_OUT_SENTENCES) == 20 and len(set(HELD_OUT_SENTENCES)) == 20
    known = vocabulary()
    for sentence in HELD_OUT_SENTENCES:
        assert not re.search(r"\d", sentence)
        assert any(w not in known for w in words_of(sentence)), sentence  # unreachable by the grammar
    generated = generate_sentences(3000, seed=0)
    assert not set(generated) & set(HELD_OUT_SENTENCES)
    assert {w for s in generated for w in words_of(s)} <= known


# ------------------------------------------------------------------------------------------------------------
# espeak-driven: real phoneme timings and the corpus
# ------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def espeak():
    pytest.importorskip("espeakng_loader")
    from mmflow_audio_f5tts.espeak import EspeakEngine

    return EspeakEngine()


def test_real_speech_mouth_follows_phonemes(espeak):
    from mmflow_audio_f5tts.espeak import Voice

    spoken = espeak.synthesize("Bob, my mom bought a big map. Father called.", Voice())
    frames = int(round(spoken.seconds * FRAME_RATE))
    openness = openness_from_phones(spoken.phones, frames)
    exp = motion_from_phones(spoken.phones, frames, seed=0)
    assert np.corrcoef(mouth_opening_from_expression(exp), openness)[0, 1] > 0.95
    for phone in spoken.phones:
        values = _frame_values(openness, phone.start, phone.end, pad=0.02)
        if phone.symbol in ("m", "b", "p"):
            assert values.min() < 0.15, phone
        if phone.symbol.startswith("_") and phone.end - phone.start >= 0.15:
            assert values.min() < 0.1, phone
    vowels = [p for p in spoken.phones if p.symbol.lstrip("'") in ("A:", "aa", "0", "a")]
    assert vowels and max(_frame_values(openness, p.start, p.end).max() for p in vowels) > 0.6


@pytest.fixture(scope="module")
def corpus(espeak):
    from mmflow_jamflow.data.corpus import build_dataset

    started = time.perf_counter()
    dataset = build_dataset(6, seed=0, min_seconds=1.0, max_seconds=6.0)
    return dataset, time.perf_counter() - started


def test_corpus_columns_shapes_and_timing(corpus):
    from mmflow_audio_f5tts.phonemes import PhonemeVocab

    dataset, seconds_taken = corpus
    assert seconds_taken < 60, f"6 clips took {seconds_taken:.1f} s"
    assert dataset.num_rows == 6
    expected = {"audio", "audio_text", "motion", "motion_cond", "expression", "openness", "text", "voice", "rate",
                "speaker", "seconds"}
    assert expected <= set(dataset.column_names)
    rows = dataset.with_format("numpy")
    vocab_size = len(PhonemeVocab())
    for i in range(dataset.num_rows):
        row = rows[i]
        seconds = float(row["seconds"])
        assert 1.0 <= seconds <= 6.0
        assert row["audio"].dtype == np.float32 and row["audio"].shape[1] == 100
        assert row["motion"].dtype == np.float32 and row["motion"].shape[1] == 12
        assert row["motion_cond"].shape[1] == 51 and row["expression"].shape[1] == 63
        assert row["audio_text"].dtype == np.int64 and row["audio_text"].shape == (len(row["audio"]),)
        assert 0 <= row["audio_text"].min() and row["audio_text"].max() < vocab_size
        assert abs(len(row["audio"]) - seconds * 93.75) <= 1
        t_motion = len(row["motion"])
        assert abs(t_motion - seconds * 25) <= 1
        assert len(row["motion_cond"]) == len(row["expression"]) == len(row["openness"]) == t_motion
        exp = row["expression"].reshape(-1, 21, 3)
        assert np.corrcoef(mouth_opening_from_expression(exp), row["openness"])[0, 1] > 0.95
        assert isinstance(row["text"], str) and row["text"] not in HELD_OUT_SENTENCES
        assert row["rate"] in (150, 165, 180)


def test_corpus_is_deterministic_and_prefix_stable(corpus):
    from mmflow_jamflow.data.corpus import build_dataset

    dataset, _ = corpus
    again = build_dataset(2, seed=0, min_seconds=1.0, max_seconds=6.0)
    for column in ("audio", "audio_text", "motion", "motion_cond", "text", "voice", "rate"):
        for i in range(2):
            np.testing.assert_array_equal(np.asarray(again[i][column]), np.asarray(dataset[i][column]))
    other = build_dataset(2, seed=1, min_seconds=1.0, max_seconds=6.0)
    assert other["text"] != dataset["text"][:2]


def test_normalizer_round_trip(corpus):
    import torch
    from mmflow_jamflow.data.corpus import fit_normalizer, pilot_normalizer

    dataset, _ = corpus
    row = dataset.with_format("numpy")[0]
    exp = torch.from_numpy(row["expression"]).reshape(-1, 21, 3)
    pilot = pilot_normalizer()
    mouth, rest = pilot.normalize(exp)
    np.testing.assert_allclose(mouth.numpy(), row["motion"], atol=1e-5)
    np.testing.assert_allclose(rest.numpy(), row["motion_cond"], atol=1e-5)
    assert np.abs(row["motion"]).max() < 20 and np.abs(row["motion_cond"]).max() < 20
    fitted = fit_normalizer(dataset)
    back = fitted.denormalize(*fitted.normalize(exp))
    torch.testing.assert_close(back, exp, atol=1e-6, rtol=1e-5)


def test_corpus_cache_is_reused_and_written_atomically(espeak, tmp_path, monkeypatch):
    from mmflow_jamflow.data import corpus as corpus_module

    first = corpus_module.build_dataset(2, seed=3, max_seconds=4.0, cache_dir=tmp_path)
    folders = [p.name for p in tmp_path.iterdir()]
    assert len(folders) == 1 and folders[0].startswith("jamflow-synthetic-")  # no temporary folder left
    assert (tmp_path / folders[0] / "normalizer").is_dir() and (tmp_path / folders[0] / "phonemes.txt").is_file()

    def no_generation(*args, **kwargs):
        raise AssertionError("the cached corpus should have been loaded")

    monkeypatch.setattr(corpus_module, "_generate", no_generation)
    second = corpus_module.build_dataset(2, seed=3, max_seconds=4.0, cache_dir=tmp_path)
    assert second["text"] == first["text"]
    assert corpus_module.corpus_fingerprint(2, seed=3, max_seconds=4.0) != corpus_module.corpus_fingerprint(
        2, seed=4, max_seconds=4.0
    )


@pytest.mark.slow
def test_parallel_workers_build_the_same_rows(corpus):
    from mmflow_jamflow.data.corpus import build_dataset

    dataset, _ = corpus
    parallel = build_dataset(4, seed=0, min_seconds=1.0, max_seconds=6.0, num_proc=2)
    for column in ("audio", "audio_text", "motion", "motion_cond", "openness", "text", "speaker"):
        for i in range(4):
            np.testing.assert_array_equal(np.asarray(parallel[i][column]), np.asarray(dataset[i][column]))
