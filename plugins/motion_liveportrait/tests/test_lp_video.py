"""Video output and input through PyAV: H.264 + AAC round trip, frame rates, atomic writes, unreadable inputs."""

import logging
from fractions import Fraction

import av
import numpy as np
import pytest
from mmflow_motion_liveportrait import video


def gradient_frames(count: int, height: int = 48, width: int = 64) -> np.ndarray:
    """Smooth, distinct frames (H.264 keeps them within a few levels)."""
    ys, xs = np.mgrid[0:height, 0:width]
    frames = np.empty((count, height, width, 3), np.uint8)
    for i in range(count):
        frames[i, ..., 0] = (xs * 3 + i * 6) % 256
        frames[i, ..., 1] = (ys * 4) % 256
        frames[i, ..., 2] = 40 + 6 * i
    return frames


def tone(seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    time = np.arange(round(seconds * rate)) / rate
    return np.stack([0.3 * np.sin(2 * np.pi * (220 + 110 * c) * time) for c in range(channels)]).astype(np.float32)


def test_round_trip_with_audio(tmp_path):
    frames = gradient_frames(30)
    audio = tone(1.2, 16000)[0]
    path = video.write_video(tmp_path / "talk.mp4", frames, fps=25, audio=audio, sample_rate=16000)
    assert path.is_file() and [p.name for p in tmp_path.iterdir()] == ["talk.mp4"]  # no temp file left

    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        assert container.streams.audio[0].codec_context.name == "aac"

    data = video.read_video(path)
    assert data.frames.shape == (30, 48, 64, 3) and data.frames.dtype == np.uint8
    assert data.fps == 25
    assert data.sample_rate == 16000 and data.audio.shape[0] == 1
    assert data.audio_duration == pytest.approx(1.2, abs=0.01)
    assert np.abs(data.frames.astype(int) - frames.astype(int)).mean() < 4
    chirp = np.sin(2 * np.pi * (200 + 1500 * np.arange(4000) / 4000) * np.arange(4000) / 16000).astype(np.float32)
    path = video.write_video(tmp_path / "talk.mp4", frames, fps=25, audio=0.5 * chirp, sample_rate=16000)
    decoded = video.read_video(path).audio[0]
    lags = np.correlate(np.pad(decoded, (0, 2000)), chirp[:2000], mode="valid")
    assert np.argmax(lags) == 0  # the encoder delay is trimmed away: audio starts with the video


@pytest.mark.parametrize("fps", [12.5, Fraction(30000, 1001), 60])
def test_any_frame_rate(tmp_path, fps):
    path = video.write_video(tmp_path / "rate.mp4", gradient_frames(10), fps=fps)
    data = video.read_video(path, read_audio=False)
    assert data.num_frames == 10
    assert data.fps == pytest.approx(float(fps), rel=1e-4)


def test_stereo_odd_size_and_float_frames(tmp_path):
    frames = gradient_frames(5, height=33, width=47).astype(np.float32) / 255
    audio = tone(0.3, 24000, channels=2).T  # N×2 is accepted too
    data = video.read_video(video.write_video(tmp_path / "odd.mp4", frames, 10, audio, 24000))
    assert data.frames.shape == (5, 34, 48, 3)  # padded by one replicated row and column for yuv420p
    assert data.audio.shape[0] == 2 and data.audio_duration == pytest.approx(0.3, abs=0.01)


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "out.mp4"
    video.write_video(path, gradient_frames(3), 25)
    before = path.read_bytes()
    frames = [*gradient_frames(2), np.zeros((20, 20, 3), np.uint8)]
    with pytest.raises(ValueError, match="frame 2 is 20×20 but the video is 64×48"):
        video.write_video(path, frames, 25)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def test_write_input_errors(tmp_path):
    with pytest.raises(ValueError, match="no frames to write"):
        video.write_video(tmp_path / "empty.mp4", [], 25)
    with pytest.raises(ValueError, match="fps must be a positive number"):
        video.write_video(tmp_path / "x.mp4", gradient_frames(2), 0)
    with pytest.raises(ValueError, match="sample_rate"):
        video.write_video(tmp_path / "x.mp4", gradient_frames(2), 25, audio=np.zeros(100))
    assert not list(tmp_path.iterdir())


def test_unreadable_inputs_are_clear_errors(tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    with pytest.raises(video.VideoReadError, match="notes.mp4: not a readable video"):
        video.read_video(text)
    with pytest.raises(FileNotFoundError, match="nothing.mp4"):
        video.read_video(tmp_path / "nothing.mp4")

    audio_only = tmp_path / "voice.m4a"
    with av.open(str(audio_only), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(tone(0.5, 16000), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 16000, 0
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    with pytest.raises(video.VideoReadError, match="voice.m4a: has no video stream.*audio"):
        video.read_video(audio_only)


def test_video_stream_without_frames_is_an_error(tmp_path):
    path = tmp_path / "blank.mkv"
    with av.open(str(path), "w") as container:  # a video stream that never gets a frame, next to audio
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        audio = container.add_stream("aac", rate=16000)
        audio.layout = "mono"
        frame = av.AudioFrame.from_ndarray(tone(0.5, 16000), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 16000, 0
        container.mux(audio.encode(frame))
        container.mux(audio.encode())
    with av.open(str(path)) as container:
        assert len(container.streams.video) == 1
    with pytest.raises(video.VideoReadError, match="blank.mkv: the video stream has no frames"):
        video.read_video(path)


def test_variable_frame_rate_is_resampled_to_a_constant_rate(tmp_path, caplog):
    path = tmp_path / "phone.mp4"
    stamps_ms = np.cumsum([0] + [40 if i % 3 else 120 for i in range(1, 20)])  # 40 ms steps with 120 ms gaps
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for i, stamp in enumerate(stamps_ms):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 10 * i, np.uint8), format="rgb24")
            frame.pts, frame.time_base = int(stamp), Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())

    with caplog.at_level(logging.WARNING, logger="mmflow_motion_liveportrait.video"):
        data = video.read_video(path, fps=25)
    assert "variable frame rate" in caplog.text
    assert data.fps == 25
    assert data.num_frames == stamps_ms[-1] // 40 + 1  # one frame per 40 ms over the whole span
    # Sample-and-hold: output frame k shows the last input frame at or before k × 40 ms.
    shown = np.rint(data.frames[:, 24, 32, 0] / 10).astype(int)
    expected = np.searchsorted(stamps_ms, np.arange(data.num_frames) * 40, side="right") - 1
    assert np.abs(shown - expected).max() == 0
