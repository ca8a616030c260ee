"""JAM-Flow's evaluation: the lip-sync maths on known cases, the sync metrics on files with a known lag, the
synthetic benchmark list, and ``mmflow evaluate`` end to end on the embedded default model."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from mmflow_audio_f5tts.audio_io import write_wav
from mmflow_audio_f5tts.sentences import HELD_OUT_SENTENCES
from mmflow_jamflow import evaluation as ev
from mmflow_motion_liveportrait.motion_template import save_motion_template, template_from_expressions
from mmflow_motion_liveportrait.render import expression_for_opening

from mmflow.codecs import InputError
from mmflow.evaluation import Sample


def speech(opening: np.ndarray, rate: int, fps: float) -> np.ndarray:
    """A 220 Hz tone whose amplitude follows ``opening`` frame by frame (its envelope is the opening)."""
    samples = np.arange(int(len(opening) * rate / fps))
    gain = np.interp(samples / rate * fps, np.arange(len(opening)), opening)
    return (gain * np.sin(2 * np.pi * 220 * samples / rate)).astype(np.float32)


def test_a_mouth_two_frames_behind_the_envelope_gives_lag_2_and_r_1():
    rng = np.random.default_rng(0)
    envelope = np.convolve(rng.random(150), np.ones(4) / 4, mode="same")
    mouth = np.concatenate([envelope[:2], envelope[:-2]])  # mouth[t + 2] == envelope[t]
    curve = ev.lagged_correlation(mouth, envelope, max_lag=5)
    assert sorted(curve) == list(range(-5, 6))
    lag, r = ev.best_lag(curve)
    assert lag == 2 and r == pytest.approx(1.0, abs=1e-9)
    assert curve[0] < 0.9 and curve[-2] < 0.9
    for shift in (-3, 0, 4):
        lag, r = ev.best_lag(ev.lagged_correlation(np.roll(envelope, shift), envelope))
        assert lag == shift and r > 0.99


def test_rms_envelope_level_and_timing():
    rate, fps = 1000, 25
    t = np.arange(2 * rate) / rate
    env = ev.rms_envelope(0.5 * np.sin(2 * np.pi * 100 * t), rate, 50, fps)
    assert env.shape == (50,) and env.dtype == np.float32
    assert np.allclose(env[2:-2], 0.5 / math.sqrt(2), atol=1e-3)
    assert env[0] == pytest.approx(0.5 / math.sqrt(2) / math.sqrt(2), abs=0.02)  # half the window before 0
    burst = np.zeros(rate)
    burst[400:440] = 1.0  # 0.40-0.44 s: centred on frame 10.5 → frames 10 and 11 see half of it
    env = ev.rms_envelope(burst, rate, 30, fps)
    assert set(np.argsort(env)[-2:]) == {10, 11}
    assert np.all(env[25:] == 0)  # past the audio: silence


def test_envelope_of_modulated_speech_finds_a_one_frame_late_mouth():
    rate, fps = 8000, 25
    opening = np.clip(np.convolve(np.random.default_rng(1).random(100) > 0.6, np.ones(3) / 3, mode="same"), 0, 1)
    late_mouth = np.concatenate([[0.0], opening[:-1]])
    lag, r = ev.best_lag(ev.sync_curve(late_mouth, speech(opening, rate, fps), rate, fps))
    assert lag == 1 and r > 0.9


def test_constant_signals_are_undefined_and_skipped_in_the_summary():
    assert math.isnan(ev.pearson(np.zeros(10), np.arange(10)))
    lag, r = ev.best_lag(ev.lagged_correlation(np.zeros(20), np.arange(20.0), max_lag=2))
    assert lag is None and math.isnan(r)
    rows = [ev.sync_row(np.zeros(40), np.ones(16_000), 16_000, 25.0),
            {"r": 0.5, "lag": 1, "r_at_0": 0.2, "curve": {"0": 0.2, "1": 0.5}},
            {"r": 0.7, "lag": 1, "r_at_0": 0.4, "curve": {"0": 0.4, "1": 0.7}}]
    assert rows[0]["r"] is None and rows[0]["lag"] is None
    summary = ev.summarise_sync(rows)
    assert summary == {"r": pytest.approx(0.6), "lag": 1, "r_at_0": pytest.approx(0.3), "median_sample_lag": 1.0,
                       "undefined": 1}


def test_motion_sync_reads_the_lag_from_saved_files(tmp_path):
    rate, fps = 24_000, ev.MOTION_FPS
    rng = np.random.default_rng(2)
    opening = np.clip(np.convolve(rng.random(120), np.ones(5) / 5, mode="same") * 1.5 - 0.3, 0, 1)
    mouth = np.concatenate([np.zeros(2), opening[:-2]])  # the motion two frames after the sound
    write_wav(tmp_path / "a.wav", speech(opening, rate, fps), rate)
    save_motion_template(template_from_expressions(expression_for_opening(mouth), fps), tmp_path / "a.npz")
    metric = ev.make_motion_sync({}, tmp_path)
    assert metric.needs == {"motion", "audio"} and not metric.reference_needs
    rows = metric.score([Sample("a", {"audio": tmp_path / "a.wav", "motion": tmp_path / "a.npz"})])
    assert rows[0]["lag"] == 2 and rows[0]["r"] > 0.95
    narrow = ev.make_motion_sync({"max_lag": "1"}, tmp_path)
    assert narrow.score([Sample("a", {"audio": tmp_path / "a.wav", "motion": tmp_path / "a.npz"})])[0]["lag"] == 1
    for bad in ({"max_lag": "x"}, {"max_lag": "-1"}, {"window": "0"}, {"lag": "1"}):
        with pytest.raises(InputError, match="motion_sync"):
            ev.make_motion_sync(bad, tmp_path)


def test_mouth_sync_without_a_face_is_an_undefined_row(tmp_path):
    pytest.importorskip("dlib")
    from mmflow_motion_liveportrait.video import write_video

    write_video(tmp_path / "blank.mp4", np.full((10, 64, 64, 3), 128, np.uint8), 25.0)
    write_wav(tmp_path / "blank.wav", np.zeros(9600, np.float32), 24_000)
    metric = ev.make_mouth_sync({}, tmp_path)
    rows = metric.score([Sample("b", {"audio": tmp_path / "blank.wav", "video": tmp_path / "blank.mp4"})])
    assert rows[0]["r"] is None and "face" in rows[0]["error"]
    assert metric.summarise(rows)["undefined"] == 1
    assert metric.directions == {"r": True, "r_at_0": True}
    assert set(metric.directions) <= set(metric.summarise(rows))


def test_synthetic_benchmark_lists_the_held_out_sentences(tmp_path):
    items = ev.load_synthetic(tmp_path)
    assert [item.text for item in items] == list(HELD_OUT_SENTENCES)
    assert [item.id for item in items] == [f"{i:02d}" for i in range(20)]
    assert {item.task for item in items} == {"talking_head"}
    assert all(item.inputs["text"] == item.text and item.inputs["portrait"].endswith(".jpg") for item in items)
    reference = items[3].reference["audio"]
    assert reference.parent == tmp_path and reference.stat().st_size > 10_000  # espeak-ng's speech, cached
    assert ev.load_synthetic(tmp_path)[3].reference["audio"].stat().st_mtime_ns == reference.stat().st_mtime_ns
    no_joint = ev.load_synthetic_no_joint(tmp_path)
    assert all(item.inputs["joint_attention"] is False for item in no_joint)
    assert "joint_attention" not in items[0].inputs


def test_mmflow_evaluate_on_the_embedded_default(tmp_path, capsys):
    """Two sentences at 4 steps: generated speech, motion and video, both sync proxies, resumable."""
    pytest.importorskip("dlib")
    from mmflow_jamflow.default_model import DEFAULT_MODEL_DIR

    from mmflow.cli import main

    argv = ["evaluate", "--model", str(DEFAULT_MODEL_DIR), "--benchmark", "synthetic", "--benchmark-root",
            str(tmp_path / "refs"), "--limit", "2", "--steps", "4", "--metrics", "mouth_sync,motion_sync",
            "--out", str(tmp_path / "ev")]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| mouth_sync (r) |" in printed and "| motion_sync (r) |" in printed
    results = json.loads((tmp_path / "ev" / "results.json").read_text())
    for name in ("mouth_sync", "motion_sync"):
        summary = results["metrics"][name]["summary"]
        assert results["metrics"][name]["n"] == 2 and summary["undefined"] == 0
        assert -1 <= summary["r"] <= 1 and abs(summary["lag"]) <= ev.MAX_LAG
    files = sorted(p.name for p in (tmp_path / "ev" / "samples" / "01").iterdir())
    assert {"01.wav", "01.mp4", "01.npz"} <= set(files)
    scores = (tmp_path / "ev" / "scores" / "mouth_sync.jsonl").read_text()
    assert main(argv) == 0  # resumed: same numbers, nothing appended
    assert (tmp_path / "ev" / "scores" / "mouth_sync.jsonl").read_text() == scores
    assert json.loads((tmp_path / "ev" / "results.json").read_text()) == results


def test_without_espeak_the_synthetic_references_are_the_texts(tmp_path, monkeypatch):
    import mmflow_audio_f5tts.espeak as espeak

    class NoEspeak:
        def __init__(self, *args, **kwargs):
            raise ImportError("espeak-ng was not found")

    monkeypatch.setattr(espeak, "EspeakEngine", NoEspeak)
    items = ev.load_synthetic(tmp_path)
    assert len(items) == 20 and all(item.reference == {} and item.text for item in items)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("task", ["talking_head", "tts", "audio_to_motion"])
def test_the_pipeline_declares_the_files_it_writes(tmp_path, task):
    """``output_suffixes`` (what ``mmflow evaluate`` checks metrics against before generating) is what ``save``
    then writes, for tasks with and without motion and video."""
    from mmflow_jamflow import JAMFlowPipeline
    from mmflow_jamflow.default_model import default_model_path
    from mmflow_motion_liveportrait.face import demo_portrait_path

    pipe = JAMFlowPipeline.from_pretrained(default_model_path())
    speech = tmp_path / "speech.wav"
    write_wav(speech, 0.1 * np.sin(np.arange(24_000) / 10).astype(np.float32), 24_000)
    inputs = {"talking_head": {"text": "one two", "portrait": str(demo_portrait_path())},
              "tts": {"text": "one two"},
              "audio_to_motion": {"audio": str(speech)}}[task]
    declared = pipe.output_suffixes(task, inputs)
    written = pipe(task, seed=0, progress=False, num_inference_steps=1, **inputs).save(tmp_path / "out", "s")
    assert declared == {path.suffix for path in written}
    assert (".mp4" in declared) == (task == "talking_head") and (".npz" in declared) == (task != "tts")
