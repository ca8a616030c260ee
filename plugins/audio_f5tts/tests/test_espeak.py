"""The offline espeak-ng engine: determinism, phone timing that covers the audio, voices, rates, errors."""

from __future__ import annotations

import ctypes.util
import hashlib
import multiprocessing
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("espeakng_loader", reason="needs `pip install espeakng-loader==0.2.4`")

from mmflow_audio_f5tts import espeak  # noqa: E402
from mmflow_audio_f5tts.espeak import SILENCE, VOICES, EspeakEngine, SpokenText, Voice  # noqa: E402

SENTENCE = "The quick brown fox jumps over the lazy dog."
OTHER = "Would you pour the boiled oil into the toy boy's foil?"


@pytest.fixture(scope="module")
def engine() -> EspeakEngine:
    return EspeakEngine()


def _same(a: SpokenText, b: SpokenText) -> bool:
    return np.array_equal(a.waveform, b.waveform) and a.phones == b.phones


def test_speech_format(engine):
    spoken = engine.synthesize(SENTENCE)
    assert spoken.sample_rate == 24_000
    assert spoken.waveform.dtype == np.float32 and spoken.waveform.ndim == 1
    assert 1.5 < spoken.seconds < 5.0
    assert spoken.seconds == spoken.waveform.shape[0] / 24_000
    peak = np.abs(spoken.waveform).max()
    assert 0.05 < peak <= 1.0


def test_same_text_and_voice_give_identical_samples(engine):
    """espeak-ng carries synthesis state between utterances; the engine must not."""
    first = engine.synthesize(SENTENCE)
    for voice in (VOICES[1], VOICES[5], Voice(rate=300)):
        engine.synthesize(OTHER, voice)
    assert _same(engine.synthesize(SENTENCE), first)
    assert _same(EspeakEngine().synthesize(SENTENCE), first)
    breathy = [engine.synthesize(OTHER, VOICES[1]) for _ in range(2)]  # +f3: breath noise and echo
    assert _same(*breathy)


def _fingerprint(spoken: SpokenText) -> str:
    return hashlib.sha256(spoken.waveform.tobytes() + repr(spoken.phones).encode()).hexdigest()


def _speak_breathy(_: int = 0) -> str:
    return _fingerprint(EspeakEngine().synthesize(OTHER, VOICES[1]))  # +f3 has breath noise (libc rand)


def test_identical_in_other_processes(engine):
    """A new interpreter and a forked worker give the same samples as this process."""
    here = _fingerprint(engine.synthesize(OTHER, VOICES[1]))
    code = (
        "from mmflow_audio_f5tts.espeak import EspeakEngine, VOICES; import hashlib; "
        f"s = EspeakEngine().synthesize({OTHER!r}, VOICES[1]); "
        "print(hashlib.sha256(s.waveform.tobytes() + repr(s.phones).encode()).hexdigest())"
    )
    root = str(Path(espeak.__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert other.stdout.strip() == here
    with multiprocessing.get_context("fork").Pool(1) as pool:
        assert pool.map(_speak_breathy, [0, 1]) == [here, here]


def test_concurrent_calls_match_sequential(engine):
    jobs = [(text, voice) for text in (SENTENCE, OTHER) for voice in VOICES[:4]]
    expected = [engine.synthesize(text, voice) for text, voice in jobs]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda job: engine.synthesize(*job), jobs))
    assert all(_same(a, b) for a, b in zip(got, expected, strict=True))


@pytest.mark.parametrize("voice", [VOICES[0], VOICES[2], VOICES[5]], ids=lambda v: v.name)
def test_phones_are_contiguous_and_cover_the_waveform(engine, voice):
    spoken = engine.synthesize(OTHER, voice)
    phones = spoken.phones
    assert phones[0].start == 0.0
    assert all(a.end == b.start for a, b in zip(phones, phones[1:], strict=False))
    assert all(p.end > p.start for p in phones)
    assert phones[-1].end == spoken.seconds
    assert len(phones) > 20


def test_phone_spans_from_events():
    """Leading silence is added, zero-length phones dropped, the last phone ends at the output's end."""
    phones = espeak._contiguous_phones([("h", 300), ("@", 1000), ("l", 1000), ("oU", 2000)], 4410, 22050, 0.2)
    assert [p.symbol for p in phones] == [SILENCE, "h", "l", "oU"]
    assert phones[1].start == 300 / 22050 and phones[2].start == 1000 / 22050
    assert phones[-1].end == 0.2
    starts_at_zero = espeak._contiguous_phones([("w", 0), ("_:", 9000)], 8820, 22050, 0.4)
    assert [(p.symbol, p.start, p.end) for p in starts_at_zero] == [("w", 0.0, 0.4)]  # event past the end


def test_phone_times_follow_the_audio(engine):
    """Vowels are loud and the final pause is quiet: the times belong to this waveform."""
    spoken = engine.synthesize(SENTENCE)
    rate = spoken.sample_rate

    def rms(phone):
        part = spoken.waveform[int(phone.start * rate) : int(phone.end * rate)]
        return float(np.sqrt(np.mean(part.astype(np.float64) ** 2)))

    vowels = [p for p in spoken.phones if p.symbol.lstrip("',")[:1] in set("aeiouAEIOUV03@")]
    final = spoken.phones[-1]
    assert final.symbol.startswith("_")
    assert np.mean([rms(p) for p in vowels]) > 10 * rms(final)


def test_rate_changes_duration(engine):
    slow = engine.synthesize(SENTENCE, Voice(rate=110))
    fast = engine.synthesize(SENTENCE, Voice(rate=300))
    assert slow.seconds > 1.8 * fast.seconds
    assert [p.symbol for p in slow.phones if not p.symbol.startswith("_")] == [
        p.symbol for p in fast.phones if not p.symbol.startswith("_")
    ]


def test_voices_are_distinct(engine):
    assert len({v.name for v in VOICES}) == len(VOICES) >= 4
    waves = [engine.synthesize(OTHER, voice).waveform for voice in VOICES]
    for i in range(len(waves)):
        for j in range(i + 1, len(waves)):
            assert not (waves[i].shape == waves[j].shape and np.allclose(waves[i], waves[j]))
    low, high = (engine.synthesize(OTHER, Voice(pitch=p)).waveform for p in (20, 80))
    assert not (low.shape == high.shape and np.allclose(low, high))


def test_bad_input_is_explained(engine):
    for text in ("", "   ", None):
        with pytest.raises(ValueError, match="non-empty"):
            engine.synthesize(text)
    with pytest.raises(ValueError, match="'xx-nothing'.*list_voices"):
        engine.synthesize("hello", Voice("xx-nothing"))
    with pytest.raises(ValueError, match="variant 'nothing'.*list_variants"):
        engine.synthesize("hello", Voice("en-us+nothing"))
    with pytest.raises(TypeError, match="Voice"):
        engine.synthesize("hello", "en-us")
    with pytest.raises(ValueError, match="rate"):
        Voice(rate=20)
    with pytest.raises(ValueError, match="pitch"):
        Voice(pitch=101)
    assert _same(engine.synthesize("hello"), engine.synthesize("hello"))  # still works after the errors


def test_lists_voices_and_variants(engine):
    voices = {name.lower() for name in engine.list_voices()}  # espeak-ng matches voice names case-blind
    assert {"en-us", "en", "de"} <= voices
    assert {"f3", "m3", "klatt"} <= set(engine.list_variants())
    for voice in VOICES:
        base, _, variant = voice.name.partition("+")
        assert base in voices and (not variant or variant in engine.list_variants())


def test_missing_library_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "espeakng_loader", None)
    monkeypatch.delenv("ESPEAK_LIB", raising=False)
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    with pytest.raises(ImportError, match="pip install espeakng-loader==0.2.4"):
        espeak._locate()


def test_helper_process_is_restarted_after_it_dies(engine):
    expected = engine.synthesize("restart me")
    with espeak._LOCK:
        # One reference: a second ``_helper()`` call after the kill may already see the process dead and
        # start (and then wait forever on) a new one.
        process = espeak._helper().process
        process.kill()
        process.wait()
    assert _same(engine.synthesize("restart me"), expected)
