"""The HDTF and CelebV-Dub benchmark lists on tiny fake dataset folders."""

from __future__ import annotations

import wave

import numpy as np
import pytest
from mmflow_motion_liveportrait.metrics import benchmarks
from mmflow_motion_liveportrait.metrics.benchmarks import load_celebv_dub, load_hdtf
from mmflow_motion_liveportrait.video import read_video, write_video

from mmflow.codecs import InputError


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _clip(path, seconds: float, sound: bool = True):
    """32² frames whose grey level is 3 × the frame index, at 25 fps, with a 16 kHz tone."""
    count = round(seconds * 25)
    frames = np.repeat(np.arange(count, dtype=np.uint8)[:, None, None, None] * 3, 32, 1).repeat(32, 2).repeat(3, 3)
    tone = 0.3 * np.sin(2 * np.pi * 220 * np.arange(round(seconds * 16000)) / 16000)
    write_video(path, frames, fps=25, audio=tone if sound else None, sample_rate=16000 if sound else None)
    return path


def _wav_frames(path) -> int:
    with wave.open(str(path)) as opened:
        return opened.getnframes()


def test_hdtf_cuts_each_clip_into_segments(tmp_path, monkeypatch):
    monkeypatch.setattr(benchmarks, "SEGMENT_SECONDS", 1.0)  # 20 s in the paper; 1 s keeps the test small
    monkeypatch.setattr(benchmarks, "MIN_SEGMENT_SECONDS", 0.4)
    root = tmp_path / "hdtf"
    root.mkdir()
    _clip(root / "WRA_Someone_000.mp4", 2.6)
    (root / "notes.txt").write_text("not a video")
    items = load_hdtf(root)
    assert [item.id for item in items] == ["WRA_Someone_000_000", "WRA_Someone_000_001", "WRA_Someone_000_002"]
    second = items[1]
    assert second.task == "audio_to_motion" and set(second.inputs) == {"audio", "portrait"}
    assert second.meta["start"] == 1.0 and second.meta["end"] == 2.0
    video = read_video(second.reference["video"])
    assert video.num_frames == 25 and video.fps == 25
    assert abs(int(video.frames[0].mean()) - 75) <= 3  # frame 25 of the clip starts the segment
    from PIL import Image

    assert abs(float(np.asarray(Image.open(second.inputs["portrait"])).mean()) - 75) <= 3
    assert _wav_frames(second.inputs["audio"]) == 16000
    assert read_video(items[2].reference["video"]).num_frames == 15  # the 0.6 s tail is kept (≥ 0.4 s)
    # a rerun reuses the written segments
    stamp = second.reference["video"].stat().st_mtime_ns
    assert load_hdtf(root)[1].reference["video"].stat().st_mtime_ns == stamp


def test_hdtf_drops_a_short_tail(tmp_path, monkeypatch):
    monkeypatch.setattr(benchmarks, "SEGMENT_SECONDS", 1.0)
    monkeypatch.setattr(benchmarks, "MIN_SEGMENT_SECONDS", 0.4)
    root = tmp_path / "hdtf"
    root.mkdir()
    _clip(root / "a.mp4", 1.2)
    assert [item.id for item in load_hdtf(root)] == ["a_000"]


def test_hdtf_names_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(benchmarks, "SEGMENT_SECONDS", 1.0)
    with pytest.raises(InputError, match="--benchmark-root"):
        load_hdtf(None)
    with pytest.raises(InputError, match=r"not a folder; expected <root>/\*\.mp4"):
        load_hdtf(tmp_path / "nowhere")
    with pytest.raises(InputError, match="no videos"):
        load_hdtf(tmp_path)
    _clip(tmp_path / "silent.mp4", 1.0, sound=False)
    with pytest.raises(InputError, match="silent.mp4: has no sound"):
        load_hdtf(tmp_path)


def test_the_tasks_are_jamflows():
    from mmflow_motion_liveportrait.metrics.lse import make_lse

    from mmflow.plugins import get_registry

    registry = get_registry()
    assert registry.benchmark("hdtf") is load_hdtf and registry.benchmark("celebv_dub") is load_celebv_dub
    assert registry.metric("lse") is make_lse
    tasks = registry.tasks
    assert tasks["audio_to_motion"].given == ("audio",)  # hdtf: the segment's speech is given
    assert tasks["dubbing"].given == ("motion",) and "audio" in tasks["dubbing"].generate  # celebv_dub


def test_celebv_dub_lists_the_test_split(tmp_path):
    test = tmp_path / "CelebV-Dub" / "test"
    test.mkdir(parents=True)
    _clip(test / "clip_a.mp4", 0.5)
    (test / "clip_a.txt").write_text("Hello there.\n")
    _clip(test / "clip_b.mp4", 0.5)
    (test / "clip_b.txt").write_text("General Kenobi.")
    (test / "clip_b.npz").write_bytes(b"template")
    items = load_celebv_dub(tmp_path / "CelebV-Dub")
    assert [item.id for item in items] == ["clip_a", "clip_b"]
    a, b = items
    assert a.task == "dubbing" and a.text == "Hello there." and a.inputs == {"motion": str(test / "clip_a.mp4"),
                                                                             "text": "Hello there."}
    assert b.inputs["motion"] == str(test / "clip_b.npz")
    assert a.reference["video"] == test / "clip_a.mp4"
    assert abs(_wav_frames(a.reference["audio"]) - 8000) <= 1


def test_celebv_dub_names_what_is_missing(tmp_path):
    with pytest.raises(InputError, match="--benchmark-root"):
        load_celebv_dub(None)
    with pytest.raises(InputError, match="no test/ folder"):
        load_celebv_dub(tmp_path)
    test = tmp_path / "test"
    test.mkdir()
    _clip(test / "clip_a.mp4", 0.5)
    with pytest.raises(InputError, match=r"transcripts missing.*clip_a\.txt"):
        load_celebv_dub(tmp_path)
    (test / "clip_a.txt").write_text("  ")
    with pytest.raises(InputError, match="is empty"):
        load_celebv_dub(tmp_path)


def test_hdtf_stops_after_limit_and_takes_a_segment_length(tmp_path, cache, monkeypatch):
    monkeypatch.setattr(benchmarks, "MIN_SEGMENT_SECONDS", 0.4)
    root = tmp_path / "hdtf"
    root.mkdir()
    _clip(root / "a.mp4", 2.6)
    _clip(root / "b.mp4", 2.6)
    options = {"segment_seconds": "1"}
    items = load_hdtf(root, limit=2, options=options)
    assert [item.id for item in items] == ["a_000", "a_001"]
    written = sorted(p.name for p in cache.rglob("*.mp4"))
    assert written == ["a_000.mp4", "a_001.mp4"]  # nothing cut beyond the limit: no a_002, no b_*
    assert [item.id for item in load_hdtf(root, limit=3, options=options)] == ["a_000", "a_001", "a_002"]
    # Another length: other segments, in their own cache folder (never the 1 s files under the same ids).
    halves = load_hdtf(root, limit=1, options={"segment_seconds": "0.5"})
    assert halves[0].meta["end"] == 0.5 and read_video(halves[0].reference["video"]).num_frames == 12
    assert halves[0].reference["video"] != items[0].reference["video"]
    # Through the runner: --limit and --benchmark-option reach the registered loader.
    from mmflow.evaluation.runner import load_benchmark
    from mmflow.plugins import get_registry

    through = load_benchmark("hdtf", root, limit=4, registry=get_registry(), options=options)
    assert [item.id for item in through] == ["a_000", "a_001", "a_002", "b_000"]
    for bad, message in (({"segment_seconds": "0"}, r"segment_seconds=0 \(benchmark 'hdtf'\): expected a number > 0"),
                         ({"segment_seconds": "x"}, "--benchmark-option segment_seconds=x"),
                         ({"segment_seconds": "inf"}, "segment_seconds=inf"),
                         ({"segment": "1"}, r"benchmark 'hdtf' has no option\(s\) \['segment'\]")):
        with pytest.raises(InputError, match=message):
            load_hdtf(root, options=bad)
