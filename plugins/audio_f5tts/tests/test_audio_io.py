"""Audio reading (soundfile + PyAV fallback), conditioning like F5-TTS inference, and atomic wav writing."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import soundfile
import torch
from mmflow_audio_f5tts import audio_io
from mmflow_audio_f5tts.audio_io import (
    AudioInputError,
    clip_reference,
    load_audio,
    load_reference_audio,
    normalize_rms,
    read_audio,
    resample,
    restore_rms,
    rms,
    to_mono,
    write_wav,
)
from mmflow_audio_f5tts.mel import SAMPLE_RATE


def _tone(freq: float, seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return (amplitude * np.sin(2 * math.pi * freq * t)).astype(np.float32)


def _stereo(seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    return np.stack([_tone(440.0, seconds, rate, amplitude), _tone(660.0, seconds, rate, amplitude)])


def _peak_hz(audio: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(audio.shape[-1])))
    return float(np.argmax(spectrum) * rate / audio.shape[-1])


def _write_with_pyav(path, audio: np.ndarray, rate: int) -> None:
    av = pytest.importorskip("av")
    layout = "mono" if audio.shape[0] == 1 else "stereo"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=rate)
        stream.layout = layout
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio), format="fltp", layout=layout)
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)


# --- reading -------------------------------------------------------------------------------------------


def test_wav_round_trip_is_exact_to_16_bit(tmp_path):
    audio = _stereo(0.5, SAMPLE_RATE)
    path = write_wav(tmp_path / "x.wav", audio)
    read, rate = read_audio(path)
    assert rate == SAMPLE_RATE and read.shape == audio.shape and read.dtype == np.float32
    assert np.abs(read - audio).max() <= 1.0 / 32768


@pytest.mark.parametrize(("suffix", "tolerance"), [(".flac", 1.0 / 32768), (".mp3", None)])
def test_soundfile_formats(tmp_path, suffix, tolerance):
    audio = _tone(440.0, 1.0, 44_100)
    soundfile.write(tmp_path / f"x{suffix}", audio, 44_100)
    read, rate = read_audio(tmp_path / f"x{suffix}")
    assert rate == 44_100 and read.shape[0] == 1
    if tolerance is not None:
        assert np.abs(read[0] - audio).max() <= tolerance
    else:  # lossy: same pitch, similar loudness, about the same length (encoder padding)
        assert abs(read.shape[1] - audio.shape[0]) < 3000
        assert abs(_peak_hz(read[0], rate) - 440.0) < 2.0
        assert abs(rms(read) - rms(audio)) < 0.05 * rms(audio)


@pytest.mark.parametrize("suffix", [".m4a", ".mp4"])
def test_aac_container_falls_back_to_pyav(tmp_path, suffix):
    audio = _stereo(1.0, 44_100)
    path = tmp_path / f"x{suffix}"
    _write_with_pyav(path, audio, 44_100)
    with pytest.raises(RuntimeError):
        soundfile.read(path)  # precondition: libsndfile cannot open it, so PyAV must have been used
    read, rate = read_audio(path)
    assert rate == 44_100 and read.shape[0] == 2
    assert abs(read.shape[1] - audio.shape[1]) <= 2048  # AAC works in 1024-sample frames
    assert abs(_peak_hz(read[0], rate) - 440.0) < 2.0 and abs(_peak_hz(read[1], rate) - 660.0) < 2.0
    assert abs(rms(read) - rms(audio)) < 0.05 * rms(audio)


def test_load_audio_mixes_down_and_resamples(tmp_path):
    soundfile.write(tmp_path / "x.wav", _stereo(1.0, 16_000).T, 16_000, subtype="FLOAT")
    audio = load_audio(tmp_path / "x.wav")
    assert audio.ndim == 1 and audio.shape[0] == SAMPLE_RATE


# --- conversion ----------------------------------------------------------------------------------------


def test_to_mono_averages_channels():
    stereo = np.array([[1.0, 0.5, -1.0], [0.0, 0.5, 1.0]], dtype=np.float32)
    assert np.array_equal(to_mono(stereo), np.array([0.5, 0.5, 0.0], dtype=np.float32))
    assert np.array_equal(to_mono(stereo[0]), stereo[0])
    with pytest.raises(ValueError, match="channels, samples"):
        to_mono(np.zeros((1, 2, 3)))


@pytest.mark.parametrize("rate", [16_000, 44_100])
def test_resample_to_24k_keeps_pitch_and_level(rate):
    audio = _tone(1000.0, 1.0, rate)
    out = resample(audio, rate, SAMPLE_RATE)
    assert out.dtype == np.float32 and out.shape == (SAMPLE_RATE,)
    assert abs(_peak_hz(out, SAMPLE_RATE) - 1000.0) < 1.5
    assert abs(rms(out[1000:-1000]) - rms(audio)) < 0.01 * rms(audio)
    assert np.array_equal(resample(audio, rate, rate), audio)
    with pytest.raises(ValueError, match="to_mono"):
        resample(np.zeros((2, 100), np.float32), rate, SAMPLE_RATE)


def test_rms_normalisation_only_raises_quiet_audio():
    quiet = _tone(300.0, 1.0, SAMPLE_RATE, amplitude=0.01)
    raised, original = normalize_rms(quiet)
    assert original == pytest.approx(0.01 / math.sqrt(2), rel=1e-3)
    assert rms(raised) == pytest.approx(audio_io.TARGET_RMS, rel=1e-5)
    assert np.allclose(restore_rms(raised, original), quiet, atol=1e-7)

    loud = _tone(300.0, 1.0, SAMPLE_RATE, amplitude=0.5)
    same, original = normalize_rms(loud)
    assert np.array_equal(same, loud) and original > audio_io.TARGET_RMS
    assert np.array_equal(restore_rms(same, original), same)
    with pytest.raises(ValueError, match="all zeros"):
        normalize_rms(np.zeros(100, np.float32))


def test_rms_normalisation_matches_f5_tts_inference(f5_infer_batch_process):
    """The cond waveform F5-TTS hands to the model equals ours (24 kHz input, so no resampling involved)."""
    captured = {}

    class RecordingModel:
        def sample(self, cond, text, duration, **kwargs):
            captured["cond"] = cond
            return torch.zeros(1, duration, 100), None

    class SilentVocoder:
        def decode(self, mel):
            return torch.zeros(1, mel.shape[-1] * 256)

    stereo = _stereo(1.2, SAMPLE_RATE, amplitude=0.02)
    run = f5_infer_batch_process(
        (torch.from_numpy(stereo), SAMPLE_RATE),
        "Some text.",
        ["More words here."],
        RecordingModel(),
        SilentVocoder(),
        progress=None,
        device="cpu",
    )
    next(run)
    ours, _ = normalize_rms(to_mono(stereo))
    assert np.abs(captured["cond"][0].numpy() - ours).max() < 1e-6


def test_load_reference_audio_conditions_like_f5(tmp_path):
    soundfile.write(tmp_path / "ref.flac", (_stereo(2.0, 44_100, amplitude=0.02)).T, 44_100)
    ref = load_reference_audio(tmp_path / "ref.flac")
    assert ref.sample_rate == SAMPLE_RATE and ref.waveform.shape == (2 * SAMPLE_RATE,)
    assert ref.original_rms == pytest.approx(0.01, rel=0.01)  # two sines of amplitude .02 averaged
    assert rms(ref.waveform) == pytest.approx(audio_io.TARGET_RMS, rel=0.01)
    assert ref.seconds == pytest.approx(2.0)


# --- clipping ------------------------------------------------------------------------------------------


def test_long_reference_is_clipped_in_a_pause(caplog):
    speech = _tone(200.0, 15.0, SAMPLE_RATE, amplitude=0.3)
    speech[int(8.0 * SAMPLE_RATE) : int(8.5 * SAMPLE_RATE)] = 0.0
    with caplog.at_level(logging.WARNING, logger=audio_io.__name__):
        clipped = clip_reference(speech, SAMPLE_RATE, source="ref.wav")
    assert 8.0 * SAMPLE_RATE < clipped.shape[0] < 8.5 * SAMPLE_RATE
    assert "ref.wav" in caplog.text and "in a pause" in caplog.text


def test_long_reference_without_pause_is_cut_hard(caplog):
    with caplog.at_level(logging.WARNING, logger=audio_io.__name__):
        clipped = clip_reference(_tone(200.0, 14.0, SAMPLE_RATE), SAMPLE_RATE)
    assert clipped.shape[0] == 12 * SAMPLE_RATE
    assert "hard" in caplog.text


def test_short_enough_reference_is_untouched(caplog):
    audio = _tone(200.0, 5.0, SAMPLE_RATE)
    with caplog.at_level(logging.WARNING):
        assert clip_reference(audio, SAMPLE_RATE) is audio
    assert caplog.text == ""


# --- errors --------------------------------------------------------------------------------------------


def test_missing_and_directory_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.wav"):
        read_audio(tmp_path / "nope.wav")
    with pytest.raises(AudioInputError, match="is a directory"):
        read_audio(tmp_path)


def test_non_audio_file_names_file_and_fix(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("this is not audio\n" * 50)
    with pytest.raises(AudioInputError, match=r"notes\.wav: not a readable audio file.*ffmpeg"):
        read_audio(path)


def test_empty_silent_and_short_references(tmp_path):
    soundfile.write(tmp_path / "empty.wav", np.zeros(0, np.float32), SAMPLE_RATE)
    with pytest.raises(AudioInputError, match=r"empty\.wav: contains no audio samples"):
        load_reference_audio(tmp_path / "empty.wav")
    soundfile.write(tmp_path / "silent.wav", np.zeros(SAMPLE_RATE * 2, np.float32), SAMPLE_RATE)
    with pytest.raises(AudioInputError, match=r"silent\.wav: is silent"):
        load_reference_audio(tmp_path / "silent.wav")
    soundfile.write(tmp_path / "short.wav", _tone(200.0, 0.3, SAMPLE_RATE), SAMPLE_RATE)
    with pytest.raises(
        AudioInputError, match=r"short\.wav: is 0\.30 s long; the reference must be at least 1\.0 s"
    ):
        load_reference_audio(tmp_path / "short.wav")


# --- writing -------------------------------------------------------------------------------------------


def test_write_wav_is_atomic_and_accepts_tensors(tmp_path, caplog):
    target = tmp_path / "out.wav"
    target.write_bytes(b"old")
    with caplog.at_level(logging.WARNING, logger=audio_io.__name__):
        write_wav(target, torch.tensor([0.0, 0.5, 2.0, -3.0]).repeat(100))
    assert "200 samples outside [-1, 1] were clipped" in caplog.text
    read, rate = read_audio(target)
    assert rate == SAMPLE_RATE and read.max() == pytest.approx(1.0, abs=1e-4) and read.min() == -1.0
    assert [p.name for p in tmp_path.iterdir()] == ["out.wav"]  # no temporary file left behind


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "out.wav"
    target.write_bytes(b"old")
    with pytest.raises((ValueError, RuntimeError, TypeError)):
        write_wav(target, np.zeros(100, np.float32), subtype="NOT_A_SUBTYPE")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.wav"]
    with pytest.raises(ValueError, match="NaN"):
        write_wav(target, np.array([0.0, np.nan], np.float32))
    with pytest.raises(FileNotFoundError, match="output folder"):
        write_wav(tmp_path / "missing" / "x.wav", np.zeros(10, np.float32))


def test_silent_given_speech_is_refused_by_name(tmp_path):
    from mmflow_audio_f5tts.audio_io import load_speech

    soundfile.write(tmp_path / "quiet.wav", np.zeros(SAMPLE_RATE, np.float32), SAMPLE_RATE)
    with pytest.raises(AudioInputError, match=r"quiet\.wav: is silent .* give a file with audible speech"):
        load_speech(tmp_path / "quiet.wav")
    soundfile.write(tmp_path / "voice.wav", 0.1 * np.ones(SAMPLE_RATE, np.float32), SAMPLE_RATE)
    assert load_speech(tmp_path / "voice.wav").shape == (SAMPLE_RATE,)


def test_write_wav_never_replaces_a_folder(tmp_path):
    (tmp_path / "out.wav").mkdir()
    (tmp_path / "out.wav" / "precious.txt").write_text("the user's")
    with pytest.raises(FileExistsError, match=r"out\.wav exists and is a folder"):
        write_wav(tmp_path / "out.wav", np.zeros(100, np.float32))
    assert (tmp_path / "out.wav" / "precious.txt").read_text() == "the user's"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.wav"]


@pytest.mark.parametrize("rate", [16000, 22050, 44100, 48000])
def test_f5_resampler_equals_torchaudio_bit_for_bit(rate):
    """F5-TTS resamples references with torchaudio's default Resample; ``sinc_resample`` reproduces it exactly."""
    torchaudio = pytest.importorskip("torchaudio")
    import torch
    from mmflow_audio_f5tts.audio_io import sinc_resample

    wave = (np.random.default_rng(rate).standard_normal(rate // 2) * 0.1).astype(np.float32)
    reference = torchaudio.transforms.Resample(rate, 24000)(torch.from_numpy(wave)[None])[0].numpy()
    np.testing.assert_array_equal(sinc_resample(wave, rate, 24000), reference)


def test_the_f5_resampler_keeps_the_images_above_the_source_nyquist(tmp_path):
    """A 16 kHz reference: soxr leaves nothing above 8 kHz, F5-TTS's sinc leaves its images there."""
    from mmflow_audio_f5tts.audio_io import load_reference_audio

    t = np.arange(16000 * 2) / 16000
    write_wav(tmp_path / "ref16k.wav", (0.3 * np.sin(2 * np.pi * 7000 * t)).astype(np.float32), 16000)
    def high_band(resampler):
        wave = load_reference_audio(tmp_path / "ref16k.wav", resampler=resampler).waveform
        spectrum = np.abs(np.fft.rfft(wave))
        return spectrum[np.fft.rfftfreq(len(wave), 1 / 24000) > 8500].max() / spectrum.max()
    assert high_band("soxr") < 1e-3 < high_band("f5")
    with pytest.raises(ValueError, match="resampler must be one of"):
        load_reference_audio(tmp_path / "ref16k.wav", resampler="linear")
