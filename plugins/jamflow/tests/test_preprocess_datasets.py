"""Speech-only input for ``mmflow preprocess``: a folder in ``datasets``' audiofolder layout (``metadata.jsonl`` /
``metadata.csv`` with ``file_name`` and a transcript column), a ``datasets`` Dataset / DatasetDict of audio rows, and
a saved dataset on the command line. Rows become an audio-only training set (JAM-Flow's ``tts`` task leaves motion
absent), written as sharded Arrow; broken rows are reported; a rerun processes nothing again."""

from __future__ import annotations

import io
import json
from pathlib import Path

import datasets
import numpy as np
import pytest
import soundfile
from mmflow_jamflow import plugin
from mmflow_jamflow.data import preprocess
from mmflow_jamflow.data.rows import dataset_clips

RATE = 22_050
VOCAB = list(" abcdefghijklmnopqrstuvwxyz.")


def _speech(seconds: float, pitch: float = 180.0) -> np.ndarray:
    time = np.arange(round(seconds * RATE)) / RATE
    return (0.05 * np.sin(2 * np.pi * pitch * time) * (1 + np.sin(2 * np.pi * 3 * time))).astype(np.float32)


@pytest.fixture
def vocab(tmp_path) -> Path:
    path = tmp_path / "vocab.txt"
    path.write_text("".join(token + "\n" for token in VOCAB))
    return path


def _options(vocab: Path) -> dict:
    return {"vocab": vocab, "tokenizer_mode": "char", "min_seconds": 0.3, "max_seconds": 5.0, "progress": False}


@pytest.fixture
def audiofolder(tmp_path) -> Path:
    """datasets' audiofolder layout: files under data/, metadata.jsonl with file_name, transcription, speaker."""
    root = tmp_path / "speech"
    (root / "data").mkdir(parents=True)
    soundfile.write(root / "data" / "a.wav", _speech(0.9), RATE)
    soundfile.write(root / "data" / "b.flac", _speech(0.6, 220), RATE)
    soundfile.write(root / "data" / "tiny.wav", _speech(0.1), RATE)
    (root / "data" / "broken.wav").write_bytes(b"RIFF but not really" * 20)
    records = [{"file_name": "data/a.wav", "transcription": "first one.", "speaker": "ann"},
               {"file_name": "data/b.flac", "transcription": "second.", "speaker": "ben"},
               {"file_name": "data/tiny.wav", "transcription": "tiny."},
               {"file_name": "data/broken.wav", "transcription": "broken."}]
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return root


def test_audiofolder_layout_makes_an_audio_only_set(audiofolder, vocab, tmp_path):
    dataset = preprocess.preprocess_clips(audiofolder, tmp_path / "out", num_shards=2, **_options(vocab))
    assert list(dataset["source"]) == ["data/a.wav", "data/b.flac"]
    assert set(dataset.column_names) == {"audio", "audio_text", "text", "speaker", "speaker_name", "seconds", "source"}
    assert list(dataset["speaker_name"]) == ["ann", "ben"] and list(dataset["text"]) == ["first one.", "second."]
    for row in dataset.with_format("numpy"):
        assert "".join(VOCAB[i] for i in row["audio_text"]) == row["text"]
    assert len(list((tmp_path / "out" / "dataset").glob("data-*.arrow"))) == 2
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["reasons"] == {"too_short": 1, "unreadable": 1} and report["streams"] == ["audio"]
    assert not (tmp_path / "out" / "normalizer").exists()


def test_rerun_processes_no_row_again(audiofolder, vocab, tmp_path, monkeypatch):
    first = preprocess.preprocess_clips(audiofolder, tmp_path / "out", **_options(vocab))

    def fail(self, clip):
        raise AssertionError(f"{clip.name} was processed again")

    monkeypatch.setattr(preprocess._ClipProcessor, "__call__", fail)
    again = preprocess.preprocess_clips(audiofolder, tmp_path / "out", **_options(vocab))
    assert np.array_equal(np.asarray(again.with_format("numpy")["seconds"]),
                          np.asarray(first.with_format("numpy")["seconds"]))


def test_dataset_rows_in_every_audio_shape(vocab, tmp_path, monkeypatch):
    wav = io.BytesIO()
    soundfile.write(wav, _speech(0.7), RATE, format="WAV")
    soundfile.write(tmp_path / "on_disk.wav", _speech(0.8), RATE)
    rows = datasets.Dataset.from_dict({
        "audio": [{"array": _speech(0.5), "sampling_rate": RATE, "bytes": None, "path": None},
                  {"array": None, "sampling_rate": None, "bytes": wav.getvalue(), "path": "x.wav"},
                  {"array": None, "sampling_rate": None, "bytes": None, "path": str(tmp_path / "on_disk.wav")},
                  {"array": np.zeros(RATE, np.float32), "sampling_rate": RATE, "bytes": None, "path": None},
                  None],
        "text": ["array.", "bytes.", "path.", "silence.", "nothing."],
    })
    splits = datasets.DatasetDict({"train": rows, "test": rows.select([0])})
    dataset = preprocess.preprocess_dataset(splits, tmp_path / "out", **_options(vocab))
    assert list(dataset["text"]) == ["array.", "bytes.", "path."]
    assert np.allclose(dataset["seconds"], [0.5, 0.7, 0.8], atol=0.02)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert {s["file"]: s["reason"] for s in report["skipped_files"]} == {"row-000003": "silent_audio",
                                                                         "row-000004": "no_media"}
    # a rerun finds every row's shard; a row whose content changed is processed again, and only that one
    calls = []
    real = preprocess._ClipProcessor.__call__
    monkeypatch.setattr(preprocess._ClipProcessor, "__call__", lambda self, clip: calls.append(clip.name) or
                        real(self, clip))
    preprocess.preprocess_dataset(splits, tmp_path / "out", **_options(vocab))
    assert calls == []  # the silent row's failure is cached too
    changed = rows.map(lambda row, i: {"audio": {**row["audio"], "array": _speech(0.6)}} if i == 0 else row,
                       with_indices=True)
    calls.clear()
    again = preprocess.preprocess_dataset(changed, tmp_path / "out", **_options(vocab))
    assert calls == ["row-000000"] and again["seconds"][0] == pytest.approx(0.6, abs=0.02)
    with pytest.raises(ValueError, match="no split 'validation'"):
        preprocess.preprocess_dataset(splits, tmp_path / "out2", split="validation", **_options(vocab))


def test_columns_are_named_in_errors(tmp_path):
    rows = datasets.Dataset.from_dict({"speech": ["a.wav"], "text": ["a"]})
    with pytest.raises(ValueError, match="needs a 'video' or an 'audio' column"):
        dataset_clips(rows, tmp_path)
    rows = datasets.Dataset.from_dict({"audio": ["a.wav"], "words": ["a"]})
    with pytest.raises(ValueError, match="transcript column .*text_column"):
        dataset_clips(rows, tmp_path)
    clips, refused, _ = dataset_clips(rows, tmp_path, text_column="words")
    assert clips == [] and refused[0]["reason"] == "missing_file"


def test_speech_only_is_refused_without_a_task_that_leaves_motion_absent(audiofolder, vocab, tmp_path, monkeypatch):
    assert preprocess.audio_only_allowed()  # JAM-Flow's tts task: audio generated, motion absent
    tasks = [t for t in plugin.mmflow_tasks() if "motion" not in t.absent]
    monkeypatch.setattr(plugin, "mmflow_tasks", lambda: tasks)
    with pytest.raises(ValueError, match="audio but no video.*no task leaves it absent"):
        preprocess.preprocess_clips(audiofolder, tmp_path / "out", **_options(vocab))


def test_command_line_reads_a_saved_dataset(vocab, tmp_path, capsys):
    from mmflow.cli import main

    rows = datasets.Dataset.from_dict({
        "audio": [{"array": _speech(0.5 + 0.1 * i), "sampling_rate": RATE} for i in range(3)],
        "words": ["one.", "two.", "three."]})
    rows.save_to_disk(str(tmp_path / "saved"))
    status = main(["preprocess", str(tmp_path / "saved"), "--out", str(tmp_path / "out"), "--vocab", str(vocab),
                   "--tokenizer", "char", "--text-column", "words", "--min-seconds", "0.3", "--num-shards", "3"])
    assert status == 0 and "3 clips" in capsys.readouterr().out
    assert len(list((tmp_path / "out" / "dataset").glob("data-*.arrow"))) == 3


def test_an_audio_feature_column_is_read_undecoded(vocab, tmp_path):
    """A column typed ``datasets.Audio()`` (as load_dataset gives it) is read as its bytes, without torchcodec."""
    wav = io.BytesIO()
    soundfile.write(wav, _speech(0.7), RATE, format="WAV")
    rows = datasets.Dataset.from_dict({"audio": [{"bytes": wav.getvalue(), "path": "a.wav"}], "sentence": ["a."]})
    rows = rows.cast_column("audio", datasets.Audio())
    assert rows.features["audio"].decode
    dataset = preprocess.preprocess_dataset(rows, tmp_path / "out", **_options(vocab))
    assert list(dataset["text"]) == ["a."] and dataset["seconds"][0] == pytest.approx(0.7, abs=0.02)
