"""Rendered video frames that are made when read, so that writers stream and memory stays flat in the length.

A minute of 512² video is 1.2 GB of frames; holding them all between the render and the mp4 writer made the
peak memory of ``mmflow generate`` grow with the text (issue 19). The motion codec therefore returns a
:class:`RenderedVideo`: it reads like the ``T×H×W×3`` uint8 array it stands for, but iterating it renders one
batch of frames at a time, and ``write_video`` encodes each frame as it comes.

A renderer that streams has ``prepare(motion) -> driving`` (everything computed from the whole motion: the
fallback reads pose, brows and gaze relative to the first frame, LivePortrait's relative mode too),
``render_frames(driving, index) -> uint8 B×H×W×3`` (the frames at those indices) and ``batch_size``. A subset
therefore renders exactly the frames the whole video has at those indices.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import numpy as np
from tqdm.auto import tqdm


class RenderedVideo:
    """``T×H×W×3`` uint8 frames of a motion on a portrait, rendered when read.

    ``len``, ``shape``, ``dtype`` and ``ndim`` are known without rendering. Iterating renders batch by batch and
    keeps nothing; ``np.asarray(video)`` renders every frame once and keeps them (later reads use that array);
    ``video[i]``, ``video[a:b]``, ``video[mask]`` render just those frames (numpy indexing, an array back);
    ``select(index)`` is a lazy subset (e.g. the cuts of ``remove_silence``).
    """

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, renderer, driving, index: np.ndarray, *, progress: bool = False,
                 frame_shape: tuple[int, int, int] | None = None) -> None:
        self._renderer, self._driving = renderer, driving
        self._index = np.asarray(index, dtype=np.int64).reshape(-1)
        self._progress = progress
        self._frame_shape = frame_shape if frame_shape is not None else getattr(renderer, "frame_shape", None)
        self._array: np.ndarray | None = None

    @classmethod
    def of(cls, renderer, motion, progress: bool = False) -> RenderedVideo:
        """The video of ``motion`` (anything :func:`~.render.as_driving_motion` takes) by ``renderer``."""
        from .render import as_driving_motion

        motion = as_driving_motion(motion)
        return cls(renderer, renderer.prepare(motion), np.arange(motion.num_frames), progress=progress)

    def __len__(self) -> int:
        return len(self._index)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        if self._frame_shape is None:  # a renderer that does not say its frame size: render one frame to know
            self._frame_shape = tuple(self._render(self._index[:1])[0].shape)
        return (len(self), *self._frame_shape)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape))

    def __repr__(self) -> str:
        state = "rendered" if self._array is not None else "rendered when read"
        return f"RenderedVideo({'×'.join(map(str, self.shape))} uint8, {state})"

    def _render(self, index: np.ndarray) -> np.ndarray:
        return self._renderer.render_frames(self._driving, index)

    def batches(self, ahead: bool = True) -> Iterator[np.ndarray]:
        """The frames in batches of the renderer's ``batch_size`` (``B×H×W×3``), rendered one batch at a time.

        ahead: render the next batch in a background thread while the caller uses this one (the mp4 writer
        encodes it: x264 and torch both release the GIL, so on two cores the render hides behind the encoding).
        At most three batches exist at once: the caller's, the next one and the one being rendered."""
        if self._array is not None:
            yield self._array
            return
        step = max(1, int(getattr(self._renderer, "batch_size", 8)))
        starts = range(0, len(self), step)
        with tqdm(total=len(self), desc="render", unit="frame", disable=not self._progress) as bar:
            render = (self._render(self._index[start : start + step]) for start in starts)
            for batch in (read_ahead(render) if ahead and len(starts) > 1 else render):
                bar.update(len(batch))
                yield batch

    def __iter__(self) -> Iterator[np.ndarray]:
        for batch in self.batches():
            yield from batch

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        if self._array is None:
            frames = np.empty(self.shape, dtype=np.uint8)
            done = 0
            for batch in self.batches():
                frames[done : done + len(batch)] = batch
                done += len(batch)
            self._array = frames
        if dtype is not None and np.dtype(dtype) != self.dtype:
            return self._array.astype(dtype)
        return self._array.copy() if copy else self._array

    def __getitem__(self, key) -> np.ndarray:
        if self._array is not None:
            return self._array[key]
        head, rest = (key[0], key[1:]) if isinstance(key, tuple) and key else (key, ())
        if head is Ellipsis:
            return np.asarray(self)[key]
        picked = self._index[head]
        if np.ndim(picked) == 0:
            frames = self._render(np.asarray([picked]))[0]
        else:
            frames = np.asarray(self._subset(picked))
        return frames[rest] if rest else frames

    def select(self, index) -> RenderedVideo:
        """The frames at positions ``index`` (ints, a slice or a boolean mask) of this video, still unrendered."""
        return self._subset(self._index[index])

    def _subset(self, motion_index: np.ndarray) -> RenderedVideo:
        """The frames at ``motion_index`` of the underlying motion."""
        return RenderedVideo(self._renderer, self._driving, motion_index, progress=self._progress,
                             frame_shape=self._frame_shape)


def read_ahead(items: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    """``items``, each produced in a background thread while the caller holds the previous one.

    The order is kept, an error raised while producing is raised here at the item it replaced, and a caller that
    stops early (closes this generator) stops the thread before the next item."""
    handoff: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        handoff.put((True, item), timeout=0.05)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, raised there
            handoff.put((False, error))
            return
        handoff.put((False, None))

    worker = threading.Thread(target=produce, name="mmflow-render-ahead", daemon=True)
    worker.start()
    try:
        while True:
            ok, item = handoff.get()
            if not ok:
                if item is not None:
                    raise item
                return
            yield item
    finally:
        stop.set()
        while worker.is_alive():  # let a blocked put see the stop flag
            try:
                handoff.get(timeout=0.05)
            except queue.Empty:
                pass
        worker.join()


class StreamingRenderer:
    """``video(motion)`` and ``render(motion)`` for a renderer with ``prepare`` and ``render_frames``."""

    def video(self, motion, progress: bool = False) -> RenderedVideo:
        """The frames of ``motion``, rendered batch by batch when read (:class:`RenderedVideo`)."""
        return RenderedVideo.of(self, motion, progress)

    def render(self, motion, progress: bool = True) -> np.ndarray:
        """Motion of ``T`` frames → all its frames ``T×H×W×3`` uint8 at once."""
        return np.asarray(self.video(motion, progress))
