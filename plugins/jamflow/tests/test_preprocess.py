"""Preprocessing your own clips: tiny synthetic talking videos (the bundled portrait, shifted a little each frame, with
a tone as speech) and random official-layout motion-extractor weights go through ``preprocess_clips``; lengths
agree, bad clips are reported and skipped, a rerun extracts nothing again, and the output loads with datasets."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch

pytest.importorskip("dlib", reason="motion extraction tracks the face with dlib-bin")
pytest.importorskip("espeakng_loader", reason="aligned text conditioning speaks the transcript with espeak-ng")

from mmflow_audio_f5tts.mel import FRAME_RATE  # noqa: E402
from mmflow_jamflow.data import preprocess  # noqa: E402
from mmflow_motion_liveportrait import networks, video  # noqa: E402
from mmflow_motion_liveportrait.checkpoints import OFFICIAL_CHECKPOINTS  # noqa: E402
from mmflow_motion_liveportrait.face import demo_portrait_path, load_image  # noqa: E402
from mmflow_motion_liveportrait.motion_stream import MotionNormalizer  # noqa: E402

AUDIO_RATE = 16_000  # not 24 kHz, so the resampling is exercised
TEXTS = {"alice/good.mp4": "Hello there.", "bob/other.mp4": "Good day to you."}


def _face_frames(count: int) -> np.ndarray:
    """192² around the bundled portrait's face (~90 px wide: small frames, yet above the detector's minimum)."""
    base = load_image(demo_portrait_path())[25:217, 124:316]
    return np.stack([np.roll(base, (i % 4) - 2, axis=1) for i in range(count)])


def _speech(seconds: float) -> np.ndarray:
    """A quiet modulated tone (RMS below F5's 0.1, so the normalisation raises it)."""
    time = np.arange(round(seconds * AUDIO_RATE)) / AUDIO_RATE
    return (0.05 * np.sin(2 * np.pi * 180 * time) * (1 + np.sin(2 * np.pi * 3 * time))).astype(np.float32)


def _write(path: Path, frames: np.ndarray, audio: np.ndarray | None, text: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    video.write_video(path, frames, fps=25, audio=audio, sample_rate=AUDIO_RATE if audio is not None else None,
                      preset="ultrafast")
    if text is not None:
        path.with_suffix(".txt").write_text(text + "\n")


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """A LivePortrait weights folder in the official layout with a random motion extractor (the only file read)."""
    root = tmp_path_factory.mktemp("pretrained_weights") / "liveportrait"
    path = root / OFFICIAL_CHECKPOINTS["motion_extractor"].relative_path
    path.parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(networks.MotionExtractor().state_dict(), path)
    return root


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clips")
    faces = _face_frames(20)
    _write(root / "alice" / "good.mp4", faces, _speech(0.84), TEXTS["alice/good.mp4"])  # audio longer: trimmed
    _write(root / "bob" / "other.mp4", faces[:18], _speech(0.7))  # transcript + speaker from metadata.csv
    (root / "metadata.csv").write_text('file,text,speaker\nbob/other.mp4,"Good day to you.",robert\n')
    _write(root / "alice" / "untranscribed.mp4", faces[:5], _speech(0.2))
    _write(root / "alice" / "mute.mp4", faces[:5], None, "No sound here.")
    _write(root / "alice" / "short.mp4", faces[:5], _speech(0.2), "Too short.")
    _write(root / "alice" / "blank.mp4", np.full((15, 96, 96, 3), 128, np.uint8), _speech(0.6), "Nobody here.")
    (root / "alice" / "broken.mp4").write_bytes(b"not a video at all" * 50)
    (root / "alice" / "broken.txt").write_text("Broken.")
    return root


@pytest.fixture(scope="module")
def processed(clips, weights, tmp_path_factory) -> tuple[Path, datasets.Dataset]:
    out = tmp_path_factory.mktemp("out") / "prepared"
    dataset = preprocess.preprocess_clips(clips, out, weights, text_conditioning="aligned", min_seconds=0.5,
                                          max_seconds=5.0, progress=False)
    return out, dataset


def test_good_clips_have_consistent_lengths(processed):
    _, dataset = processed
    rows = {row["source"]: row for row in dataset.with_format("numpy")}
    assert sorted(rows) == sorted(TEXTS)
    for name, row in rows.items():
        seconds = float(row["seconds"])
        mel, motion = len(row["audio"]), len(row["motion"])
        assert row["audio"].shape[1] == 100 and row["audio"].dtype == np.float32
        assert abs(mel - seconds * float(FRAME_RATE)) <= 1, name
        assert abs(motion - seconds * 25) <= 1, name
        assert row["motion"].shape == (motion, 12) and row["motion_cond"].shape == (motion, 51)
        assert row["expression"].shape == (motion, 63)
        assert row["audio_text"].shape == (mel,)  # aligned: one phoneme id per mel frame
        assert row["text"] == TEXTS[name]
    assert rows["alice/good.mp4"]["seconds"] == pytest.approx(0.8, abs=1e-3)  # trimmed to the 20 video frames
    assert rows["bob/other.mp4"]["seconds"] == pytest.approx(0.7, abs=0.03)  # trimmed to the audio
    assert rows["alice/good.mp4"]["speaker_name"] == "alice" and rows["bob/other.mp4"]["speaker_name"] == "robert"
    assert {int(row["speaker"]) for row in rows.values()} == {0, 1}


def test_bad_clips_are_reported_and_skipped(processed):
    out, _ = processed
    report = json.loads((out / "report.json").read_text())
    reasons = {entry["file"]: entry["reason"] for entry in report["skipped_files"]}
    assert reasons == {
        "alice/broken.mp4": "unreadable",
        "alice/untranscribed.mp4": "missing_transcript",
        "alice/mute.mp4": "no_audio",
        "alice/short.mp4": "too_short",
        "alice/blank.mp4": "no_face",
    }
    assert report["kept"] == 2 and report["clips"] == 7
    assert all(entry["message"] for entry in report["skipped_files"])


def test_output_loads_as_a_training_set(processed):
    out, _ = processed
    dataset = datasets.load_from_disk(str(out / "dataset"))
    assert {"audio", "audio_text", "motion", "motion_cond", "expression", "text", "speaker",
            "seconds"} <= set(dataset.column_names)
    assert len(preprocess.load_clips_dataset(out)) == len(dataset) == 2
    normalizer = MotionNormalizer.from_pretrained(out / "normalizer")
    row = dataset.with_format("torch")[0]
    mouth, rest = normalizer.normalize(row["expression"].reshape(-1, 21, 3))
    assert torch.allclose(mouth, row["motion"], atol=1e-5) and torch.allclose(rest, row["motion_cond"], atol=1e-5)
    assert (out / "phonemes.txt").is_file() and not any(p.name.startswith(".dataset") for p in out.iterdir())


def test_rerun_resumes_without_extracting_again(processed, clips, weights, monkeypatch, tmp_path):
    out, first = processed
    calls = []
    real = preprocess.extract_motion
    monkeypatch.setattr(preprocess, "extract_motion", lambda *a, **k: calls.append(a) or real(*a, **k))

    again = preprocess.preprocess_clips(clips, out, weights, text_conditioning="aligned", min_seconds=0.5,
                                        max_seconds=5.0, progress=False)
    assert calls == []  # every clip (and every cached failure) came from .work/
    assert list(again["source"]) == list(first["source"])
    assert np.array_equal(again.with_format("numpy")[0]["motion"], first.with_format("numpy")[0]["motion"])

    # Other text conditioning: re-assembled from the same shards, F5 ids of the transcript (filler mode).
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("".join(t + "\n" for t in [" ", *sorted(set("".join(TEXTS.values())) - {" "})]))
    filler = preprocess.preprocess_clips(clips, out, weights, vocab=vocab, tokenizer_mode="char",
                                         min_seconds=0.5, max_seconds=5.0, progress=False)
    assert calls == []
    tokens = vocab.read_text().split("\n")[:-1]
    for row in filler:
        assert "".join(tokens[i] for i in row["audio_text"]) == row["text"]
    assert (out / "vocab.txt").read_text() == vocab.read_text()


def test_changed_video_is_processed_again(processed, clips, weights, monkeypatch):
    out, _ = processed
    work = preprocess._WorkFolder(out, preprocess._weights_id(weights))
    clip = next(c for c in preprocess.find_clips(clips, out) if c.name == "alice/good.mp4")
    assert isinstance(work.lookup(clip), Path)
    key = work.key(clip)
    key["size"] += 1  # as if the file had been replaced
    monkeypatch.setattr(work, "key", lambda c: key)
    assert work.lookup(clip) is None


def test_no_usable_clip_is_a_clear_error(tmp_path, weights):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "bad.mp4").write_bytes(b"\0" * 100)
    (tmp_path / "in" / "bad.txt").write_text("Nothing.")
    with pytest.raises(ValueError, match=r"none of the 1 clip\(s\).*1 unreadable.*report.json"):
        preprocess.preprocess_clips(tmp_path / "in", tmp_path / "out", weights, text_conditioning="aligned",
                                    progress=False)
    assert json.loads((tmp_path / "out" / "report.json").read_text())["reasons"] == {"unreadable": 1}
    with pytest.raises(ValueError, match="pass vocab="):
        preprocess.preprocess_clips(tmp_path / "in", tmp_path / "out2", weights, progress=False)
    with pytest.raises(FileNotFoundError, match="motion_extractor.pth"):
        preprocess.preprocess_clips(tmp_path / "in", tmp_path / "out2", tmp_path, text_conditioning="aligned")


def test_command_line(processed, clips, weights, capsys):
    import argparse

    out, _ = processed
    parser = argparse.ArgumentParser(prog="mmflow")
    preprocess.add_preprocess(parser.add_subparsers())
    args = parser.parse_args(["preprocess", str(clips), "--out", str(out), "--liveportrait-weights", str(weights),
                              "--text-conditioning", "aligned", "--min-seconds", "0.5", "--max-seconds", "5"])
    assert args.run(args) == 0  # resumes from .work/: nothing to extract
    assert "2 clips" in capsys.readouterr().out


def test_dataset_rows_of_videos(clips, weights, tmp_path):
    """A ``datasets`` dataset with a ``video`` column (a path, and datasets' ``{path, bytes}``) gives the same rows
    as the folder; a row whose file is gone is reported, not fatal."""
    rows = datasets.Dataset.from_dict({
        "video": [{"path": str(clips / "alice" / "good.mp4"), "bytes": None},
                  {"path": "other.mp4", "bytes": (clips / "bob" / "other.mp4").read_bytes()},
                  {"path": str(tmp_path / "gone.mp4"), "bytes": None}],
        "sentence": [TEXTS["alice/good.mp4"], TEXTS["bob/other.mp4"], "Gone."],
        "speaker": ["alice", "robert", "x"],
    })
    dataset = preprocess.preprocess_dataset(rows, tmp_path / "out", weights, text_conditioning="aligned",
                                            min_seconds=0.5, max_seconds=5.0, progress=False)
    assert list(dataset["source"]) == ["row-000000", "row-000001"]
    assert list(dataset["speaker_name"]) == ["alice", "robert"]
    assert dataset.with_format("numpy")[0]["motion"].shape == (20, 12)  # the folder's 0.8 s clip
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["reasons"] == {"missing_file": 1} and report["clips"] == 3
    assert (tmp_path / "out" / "normalizer").is_dir()


def test_speech_in_a_talking_face_folder_is_reported(clips, weights, tmp_path):
    import shutil

    import soundfile

    folder = tmp_path / "mixed"
    shutil.copytree(clips / "alice", folder / "alice")
    soundfile.write(folder / "alice" / "voice.wav", _speech(1.0), AUDIO_RATE)
    (folder / "alice" / "voice.txt").write_text("Only a voice.")
    preprocess.preprocess_clips(folder, tmp_path / "out", weights, text_conditioning="aligned", min_seconds=0.5,
                                max_seconds=5.0, progress=False)
    reasons = {s["file"]: s["reason"] for s in json.loads((tmp_path / "out" / "report.json").read_text())
               ["skipped_files"]}
    assert reasons["alice/voice.wav"] == "no_video"
