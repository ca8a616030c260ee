"""Rendered videos are read lazily: the same frames as rendering all at once, any subset, and a writer that
streams them holds one batch at a time, not the clip."""

import threading
import time
import tracemalloc

import numpy as np
import pytest
from mmflow_motion_liveportrait import render
from mmflow_motion_liveportrait.frames import RenderedVideo, StreamingRenderer, read_ahead
from mmflow_motion_liveportrait.idle import idle_motion
from mmflow_motion_liveportrait.plugin import MOTION
from mmflow_motion_liveportrait.video import read_video, write_video


def test_a_rendered_video_reads_like_the_array_of_its_frames(astronaut):
    pytest.importorskip("dlib", reason="the fallback renderer finds the face with dlib")
    renderer = render.LandmarkFallbackRenderer(astronaut, batch_size=4)
    frames = 11
    exp = render.expression_for_opening(np.linspace(0, 1, frames)) + idle_motion(frames, 2, MOTION.frame_rate)
    # A pose relative to the first frame: a subset must still render the frames of the whole motion.
    motion = render.DrivingMotion(exp=exp, pitch=np.zeros(frames), yaw=np.zeros(frames),
                                  roll=np.linspace(0, 8, frames), scale=np.ones((frames, 1)))
    full = renderer.render(motion, progress=False)
    video = renderer.video(motion)
    assert len(video) == frames and video.shape == full.shape and video.dtype == np.uint8 and video.ndim == 4
    np.testing.assert_array_equal(np.stack(list(video)), full)
    np.testing.assert_array_equal(video[3], full[3])
    np.testing.assert_array_equal(video[5:10:2], full[5:10:2])
    np.testing.assert_array_equal(video[[1, 7]], full[[1, 7]])
    np.testing.assert_array_equal(video[2, 10:20, :, 1], full[2, 10:20, :, 1])
    np.testing.assert_array_equal(video[-1], full[-1])
    subset = video.select([0, 4, 10])
    assert isinstance(subset, RenderedVideo) and len(subset) == 3
    np.testing.assert_array_equal(np.asarray(subset), full[[0, 4, 10]])
    np.testing.assert_array_equal(np.asarray(subset.select(slice(1, None))), full[[4, 10]])
    assert np.asarray(video) is np.asarray(video)  # rendered once when asked as an array, then kept


class StripeRenderer(StreamingRenderer):
    """Frame k is a stripe pattern of k (no face needed); records how many frames each call rendered."""

    frame_shape = (96, 128, 3)
    batch_size = 8

    def __init__(self):
        self.calls = []

    def prepare(self, motion):
        return np.asarray(motion.exp)[:, 0, 0]

    def render_frames(self, driving, index):
        self.calls.append(len(index))
        frames = np.empty((len(index), *self.frame_shape), np.uint8)
        frames[:] = (np.arange(self.frame_shape[1]) * 2)[None, None, :, None].astype(np.uint8)
        frames[:, :48] = (driving[index] % 200 + 20).astype(np.uint8)[:, None, None, None]
        return frames


def test_writing_a_rendered_video_streams_its_frames(tmp_path):
    renderer = StripeRenderer()
    frames = 150
    exp = np.zeros((frames, 21, 3), np.float32)
    exp[:, 0, 0] = np.arange(frames)
    video = renderer.video(exp)
    assert renderer.calls == []  # nothing rendered until read
    clip_bytes = frames * int(np.prod(renderer.frame_shape))
    write_video(tmp_path / "warm.mp4", np.zeros((1, 96, 128, 3), np.uint8), 25)  # PyAV's imports, not the clip
    tracemalloc.start()
    try:
        write_video(tmp_path / "clip.mp4", video, 25)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert renderer.calls == [8] * 18 + [6]  # batch by batch, each frame once
    assert peak < clip_bytes / 4, (peak, clip_bytes)  # a few batches in flight, never the whole clip
    back = read_video(tmp_path / "clip.mp4").frames
    assert len(back) == frames
    np.testing.assert_allclose(back[:, 10:40, 10:100].mean(axis=(1, 2, 3)), np.arange(frames) % 200 + 20, atol=3)


def test_read_ahead_keeps_order_and_produces_one_item_ahead():
    produced = []

    def items():
        for k in range(6):
            produced.append(k)
            yield k

    reader = read_ahead(items())
    assert next(reader) == 0
    deadline = time.monotonic() + 5
    while len(produced) < 3 and time.monotonic() < deadline:  # item 1 queued, item 2 made while 0 is held
        time.sleep(0.01)
    time.sleep(0.05)
    assert produced == [0, 1, 2]  # never further ahead than that
    assert [0, *reader] == list(range(6))


def test_read_ahead_raises_the_producers_error_in_place():
    def items():
        yield 1
        yield 2
        raise OSError("disk gone")

    reader = read_ahead(items())
    assert [next(reader), next(reader)] == [1, 2]
    with pytest.raises(OSError, match="disk gone"):
        next(reader)


def test_read_ahead_stops_its_thread_when_the_caller_stops_early():
    def items():
        yield from range(1000)

    before = {t.name for t in threading.enumerate()}
    reader = read_ahead(items())
    assert next(reader) == 0
    reader.close()
    assert "mmflow-render-ahead" not in {t.name for t in threading.enumerate()} - before


def test_rendering_ahead_gives_the_frames_rendered_in_turn():
    renderer = StripeRenderer()
    exp = np.zeros((21, 21, 3), np.float32)
    exp[:, 0, 0] = np.arange(21) * 7
    video = renderer.video(exp)
    ahead = np.concatenate(list(video.batches()))
    in_turn = np.concatenate(list(video.batches(ahead=False)))
    np.testing.assert_array_equal(ahead, in_turn)
    assert renderer.calls == [8, 8, 5] * 2
