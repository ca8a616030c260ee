"""Video files through PyAV (bundled FFmpeg): write H.264 (+ AAC audio) atomically, read frames, fps and audio.

Writing: frames are encoded as H.264 (libx264, yuv420p, CRF 18 by default) at any frame rate; when a waveform is
given it is muxed as AAC, interleaved with the video. The file appears only when complete: it is written to a
temporary name in the same folder and renamed (``mmflow.io.atomic_path``). yuv420p needs even sizes, so an odd
width or height is padded by one replicated row/column.

Reading: all frames as RGB uint8 plus the first audio stream as float32 ``C×N``. A variable-frame-rate video
(phone recordings, screen captures) is resampled to a constant rate by sample-and-hold: output frame k shows the
last input frame whose timestamp is ≤ k/fps; the rate is the stream's average rate unless ``fps`` is given.
This keeps frame k at time k/fps, which the motion stream (25 frames/s, aligned to audio) relies on.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from mmflow.io import atomic_path

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp")
"""Extensions taken as videos where a file may be a video or something else (a motion template, an image)."""

# Frame-interval spread (relative to the median interval) above which a stream counts as variable-rate.
VFR_TOLERANCE = 0.1


class VideoReadError(ValueError):
    """A file cannot be read as a video, or holds no video frames."""


def _require_av():
    try:
        import av
    except ImportError as error:  # av is a declared dependency; this only fires in a broken install
        raise ImportError("video input/output needs PyAV: `pip install av`.") from error
    return av


@dataclass
class VideoData:
    """A decoded video. frames: ``T×H×W×3`` uint8 RGB. fps: constant frame rate. audio: ``C×N`` float32 in
    [-1, 1] (None when the file has no audio). sample_rate: Hz (None without audio)."""

    frames: np.ndarray
    fps: float
    audio: np.ndarray | None = None
    sample_rate: int | None = None

    @property
    def num_frames(self) -> int:
        return self.frames.shape[0]

    @property
    def duration(self) -> float:
        """Video duration in seconds."""
        return self.num_frames / self.fps

    @property
    def audio_duration(self) -> float | None:
        return None if self.audio is None else self.audio.shape[1] / self.sample_rate


# --------------------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------------------


def _frame_rate(fps) -> Fraction:
    """fps as a Fraction FFmpeg can use; 29.97 → 2997/100, 30000/1001 stays exact."""
    try:
        rate = Fraction(fps) if isinstance(fps, Fraction | int) else Fraction(float(fps)).limit_denominator(1001)
    except (TypeError, ValueError, OverflowError) as error:
        raise ValueError(f"fps must be a positive number; got {fps!r}.") from error
    if rate <= 0 or not math.isfinite(float(rate)):
        raise ValueError(f"fps must be a positive number; got {fps!r}.")
    return rate


def _as_audio(audio, sample_rate) -> tuple[np.ndarray, int]:
    """Waveform ``N``, ``C×N`` or ``N×C`` (C ≤ 2) float → ``C×N`` float32 clipped to [-1, 1]."""
    if sample_rate is None or int(sample_rate) != sample_rate or sample_rate <= 0:
        raise ValueError(f"audio needs a positive integer sample_rate (Hz); got {sample_rate!r}.")
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        audio = audio[None]
    elif audio.ndim == 2 and audio.shape[0] > 2 and audio.shape[1] <= 2:
        audio = audio.T  # N×C → C×N
    if audio.ndim != 2 or audio.shape[0] not in (1, 2) or audio.shape[1] == 0:
        raise ValueError(
            f"audio must be a mono waveform N or a mono/stereo C×N (or N×C) array; got shape {audio.shape}."
        )
    if not np.all(np.isfinite(audio)):
        raise ValueError("audio contains NaN or infinite samples.")
    peak = float(np.abs(audio).max())
    if peak > 1.0:
        logger.warning("audio peaks at %.2f, outside [-1, 1]; clipping it", peak)
        audio = np.clip(audio, -1.0, 1.0)
    return np.ascontiguousarray(audio), int(sample_rate)


def _as_frame(frame, index: int) -> np.ndarray:
    """One ``H×W×3`` frame, uint8 or float in [0, 1] → uint8 with even height and width."""
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame {index} must be H×W×3 RGB; got shape {frame.shape}.")
    if frame.dtype != np.uint8:
        if not np.issubdtype(frame.dtype, np.floating):
            raise ValueError(f"frame {index}: use uint8 or float in [0, 1]; got dtype {frame.dtype}.")
        frame = (np.clip(frame, 0, 1) * 255).round().astype(np.uint8)
    height, width = frame.shape[:2]
    if height % 2 or width % 2:  # yuv420p subsamples chroma 2×2
        frame = np.pad(frame, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
    return np.ascontiguousarray(frame)


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray | Iterable[np.ndarray],
    fps: float | Fraction = 25,
    audio: np.ndarray | None = None,
    sample_rate: int | None = None,
    *,
    crf: int = 18,
    preset: str = "medium",
    audio_bitrate: int = 128_000,
) -> Path:
    """Write frames (``T×H×W×3`` array or an iterable of ``H×W×3``) as H.264, with AAC audio if given.

    audio: float waveform ``N`` / ``C×N`` in [-1, 1] at ``sample_rate`` Hz. The container follows the extension
    (``.mp4`` recommended). The file is replaced atomically; returns its path.
    """
    av = _require_av()
    path = Path(path)
    rate = _frame_rate(fps)
    if audio is not None:
        audio, sample_rate = _as_audio(audio, sample_rate)
    frame_iter = iter(frames)
    count = 0
    with atomic_path(path) as temp:
        try:
            container = av.open(str(temp), mode="w")
        except (av.error.FFmpegError, ValueError) as error:
            raise ValueError(f"{path}: cannot create a video file with this extension ({error}); use .mp4.") from error
        with container:
            video_stream = None
            audio_stream = None
            samples_written = 0
            for frame in frame_iter:
                frame = _as_frame(frame, count)
                if video_stream is None:
                    video_stream = container.add_stream("libx264", rate=rate)
                    video_stream.height, video_stream.width = frame.shape[:2]
                    video_stream.pix_fmt = "yuv420p"
                    video_stream.options = {"crf": str(crf), "preset": preset}
                    if audio is not None:
                        audio_stream = container.add_stream("aac", rate=sample_rate)
                        audio_stream.layout = "mono" if audio.shape[0] == 1 else "stereo"
                        audio_stream.bit_rate = audio_bitrate
                elif frame.shape[:2] != (video_stream.height, video_stream.width):
                    raise ValueError(
                        f"frame {count} is {frame.shape[1]}×{frame.shape[0]} but the video is "
                        f"{video_stream.width}×{video_stream.height}; all frames must have one size."
                    )
                video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
                video_frame.pts = count
                video_frame.time_base = 1 / rate
                container.mux(video_stream.encode(video_frame))
                count += 1
                if audio_stream is not None:  # interleave: audio up to the end of this frame
                    until = min(audio.shape[1], round(count / rate * sample_rate))
                    samples_written = _encode_audio(av, container, audio_stream, audio, samples_written, until)
            if video_stream is None:
                raise ValueError(f"{path}: no frames to write; pass at least one H×W×3 frame.")
            container.mux(video_stream.encode())
            if audio_stream is not None:
                _encode_audio(av, container, audio_stream, audio, samples_written, audio.shape[1])
                container.mux(audio_stream.encode())
    logger.info(
        "wrote %s: %d frames at %s fps%s", path, count, rate, "" if audio is None else f" + {sample_rate} Hz audio"
    )
    return path


def _encode_audio(av, container, stream, audio: np.ndarray, start: int, stop: int) -> int:
    """Encode samples ``start:stop`` of ``audio`` (``C×N``); returns ``stop``."""
    if stop <= start:
        return start
    chunk = np.ascontiguousarray(audio[:, start:stop])
    frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono" if audio.shape[0] == 1 else "stereo")
    frame.sample_rate = stream.rate
    frame.pts = start
    frame.time_base = Fraction(1, stream.rate)
    container.mux(stream.encode(frame))
    return stop


# --------------------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------------------


def _resample_constant_rate(frames: list[np.ndarray], times: np.ndarray, fps: float) -> list[np.ndarray]:
    """Sample-and-hold the frames (shown at ``times`` seconds) onto the grid ``k / fps``."""
    start = times[0]
    count = max(1, int(math.floor((times[-1] - start) * fps + 1e-6)) + 1)
    grid = start + np.arange(count) / fps
    index = np.searchsorted(times, grid + 1e-6, side="right") - 1
    return [frames[i] for i in np.clip(index, 0, len(frames) - 1)]


def is_variable_rate(times: np.ndarray) -> bool:
    """Whether frame timestamps (seconds) have intervals that differ by more than :data:`VFR_TOLERANCE`."""
    if len(times) < 3:
        return False
    intervals = np.diff(times)
    median = float(np.median(intervals))
    return median > 0 and float(np.max(np.abs(intervals - median))) > VFR_TOLERANCE * median


def read_video(
    path: str | os.PathLike, *, fps: float | None = None, read_audio: bool = True, max_frames: int | None = None
) -> VideoData:
    """Decode a video file: frames ``T×H×W×3`` uint8 RGB, fps, and the first audio stream (``C×N`` float32).

    fps: resample to this constant rate (sample-and-hold); by default a constant-rate video keeps its rate and a
    variable-rate one is resampled to its average rate (with a warning). max_frames: stop after that many input
    frames.
    """
    av = _require_av()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video {str(path)!r} does not exist.")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError) as error:
        raise VideoReadError(
            f"{path}: not a readable video ({error}). Pass a video file FFmpeg can decode (mp4, mov, mkv, webm)."
        ) from error
    with container:
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["none"]
            raise VideoReadError(
                f"{path}: has no video stream (streams: {', '.join(kinds)}); pass a video with picture frames."
            )
        stream = container.streams.video[0]
        frames, times = [], []
        try:
            for frame in container.decode(stream):
                frames.append(frame.to_ndarray(format="rgb24"))
                times.append(frame.time)
                if max_frames is not None and len(frames) >= max_frames:
                    break
        except av.error.FFmpegError as error:
            if not frames:
                raise VideoReadError(f"{path}: cannot decode its video stream ({error}).") from error
            logger.warning("%s: decoding stopped after %d frames (%s); using those", path, len(frames), error)
        if not frames:
            raise VideoReadError(f"{path}: the video stream has no frames; pass a video with at least one frame.")
        stream_rate = stream.average_rate or stream.guessed_rate
        frames_out, rate = _constant_rate(path, frames, times, stream_rate, fps)
        audio, sample_rate = _read_audio(av, container, path) if read_audio else (None, None)
    return VideoData(np.stack(frames_out), rate, audio, sample_rate)


def _constant_rate(path: Path, frames, times, stream_rate, fps) -> tuple[list[np.ndarray], float]:
    """The frames on a constant-rate grid, and that rate (see the module docstring)."""
    known = all(t is not None for t in times)
    stamps = np.asarray(times, dtype=np.float64) if known else None
    if stamps is not None and len(stamps) > 1 and not np.all(np.diff(stamps) > 0):
        order = np.argsort(stamps, kind="stable")  # B-frames decode in presentation order; be safe anyway
        frames, stamps = [frames[i] for i in order], stamps[order]
    native = float(stream_rate) if stream_rate else None
    if native is None and stamps is not None and len(stamps) > 1 and stamps[-1] > stamps[0]:
        native = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    if native is None:
        native = 25.0
        logger.warning("%s: no frame rate or timestamps in the file; assuming 25 fps", path)
    variable = stamps is not None and is_variable_rate(stamps)
    if fps is None and not variable:
        return frames, native
    rate = float(fps) if fps is not None else native
    if not (rate > 0 and math.isfinite(rate)):
        raise ValueError(f"fps must be a positive number; got {fps!r}.")
    if variable:
        logger.warning(
            "%s: variable frame rate (intervals %.1f–%.1f ms); resampling to a constant %.3f fps by sample-and-hold",
            path,
            1000 * float(np.diff(stamps).min()),
            1000 * float(np.diff(stamps).max()),
            rate,
        )
    if stamps is None:  # no timestamps: assume the native rate
        stamps = np.arange(len(frames)) / native
    return _resample_constant_rate(frames, stamps, rate), rate


def _read_audio(av, container, path: Path) -> tuple[np.ndarray | None, int | None]:
    """First audio stream → ``C×N`` float32 and its rate; trims the encoder's padding using the stream duration."""
    if not container.streams.audio:
        return None, None
    stream = container.streams.audio[0]
    container.seek(0)
    resampler = av.AudioResampler(format="fltp")
    chunks = []
    try:
        for frame in container.decode(stream):
            for converted in resampler.resample(frame):
                chunks.append(converted.to_ndarray())
        for converted in resampler.resample(None):
            chunks.append(converted.to_ndarray())
    except av.error.FFmpegError as error:
        logger.warning("%s: audio decoding stopped early (%s)", path, error)
    if not chunks:
        return None, None
    audio = np.concatenate(chunks, axis=1).astype(np.float32)  # C×N
    rate = int(stream.rate)
    if stream.duration is not None and stream.time_base is not None:
        expected = round(float(stream.duration * stream.time_base) * rate)
        if 0 < expected < audio.shape[1]:
            audio = audio[:, :expected]  # AAC pads its last frame to 1024 samples
    return audio, rate
