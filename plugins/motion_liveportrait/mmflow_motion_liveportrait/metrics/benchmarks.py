"""Benchmark lists from local dataset folders: HDTF talking heads (20 s segments; ``--benchmark-option
segment_seconds=N`` for others) and CelebV-Dub test (dubbing).

Neither dataset may be redistributed, so both are read from a folder the user has; what the items need that the
folder does not hold as files (a segment's first frame, its audio, its video) is written once to a cache,
``$XDG_CACHE_HOME/mmflow/benchmarks/<name>/[<segment length>/]<hash of the source file>/``, never into
the dataset folder.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import wave
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmflow.codecs import InputError
from mmflow.evaluation.metric import BenchmarkItem
from mmflow.evaluation.options import check_options, float_option
from mmflow.io import atomic_path, user_cache_folder

from .lse import FPS, decode_audio, iter_frames

logger = logging.getLogger(__name__)

SEGMENT_SECONDS = 20.0
"""The paper evaluates 20 s clips: "longer videos are segmented into 20-second clips" (JAM-Flow §4)."""
MIN_SEGMENT_SECONDS = 4.0
"""A video's last, shorter part is kept when it lasts this long (SyncNet's reference tracks need 100 frames)."""
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi")

HDTF_LAYOUT = "<root>/*.mp4 (the HDTF clips, e.g. WRA_KellyAyotte_000.mp4), each with its sound"
CELEBV_DUB_LAYOUT = ("<root>/test/<id>.mp4 (the clip with its original speech) and <root>/test/<id>.txt (its "
                     "transcript); optional <root>/test/<id>.npz or .pkl (its LivePortrait motion template; without "
                     "one the pipeline extracts the motion from the video and needs liveportrait_weights)")


def cache_root(name: str) -> Path:
    return user_cache_folder("benchmarks", name)


def _source_key(path: Path) -> str:
    """A folder name that changes when the source file does (its resolved path, size and modification time)."""
    stat = path.stat()
    text = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    return f"{path.stem}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def _videos(folder: Path, what: str, layout: str) -> list[Path]:
    if folder is None:
        raise InputError(f"{what} is read from a local folder: pass --benchmark-root DIR with {layout}.")
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{what}: {folder} is not a folder; expected {layout}.")
    videos = sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
    if not videos:
        raise InputError(f"{what}: no videos ({', '.join(VIDEO_SUFFIXES)}) in {folder}; expected {layout}.")
    return videos


def write_wav(path: Path, audio: np.ndarray, rate: int) -> Path:
    """Mono float [-1, 1] samples as a 16-bit PCM wav, written atomically."""
    samples = np.round(np.clip(audio, -1.0, 1.0) * 32767).astype("<i2")
    with atomic_path(path) as temp, wave.open(str(temp), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())
    return path


def write_png(path: Path, frame: np.ndarray) -> Path:
    from PIL import Image

    with atomic_path(path) as temp:
        Image.fromarray(frame).save(temp, format="PNG")
    return path


# ------------------------------------------------------------------------------------------------ segments


@dataclass(frozen=True)
class Segment:
    """Seconds ``[start, end)`` of ``source``, materialised under ``folder``: first frame, audio and video."""

    source: Path
    index: int
    start: float
    end: float
    folder: Path

    @property
    def id(self) -> str:
        return f"{self.source.stem}_{self.index:03d}"

    @property
    def portrait(self) -> Path:
        return self.folder / f"{self.id}.png"

    @property
    def audio(self) -> Path:
        return self.folder / f"{self.id}.wav"

    @property
    def video(self) -> Path:
        return self.folder / f"{self.id}.mp4"

    def ready(self) -> bool:
        return self.portrait.is_file() and self.audio.is_file() and self.video.is_file()


def duration(path: Path) -> float:
    """A video's length in seconds from its container header (no decoding)."""
    from ..video import _require_av

    av = _require_av()
    try:
        with av.open(str(path)) as container:
            if container.duration is not None:
                return container.duration / 1_000_000
            stream = container.streams.video[0]
            return float(stream.duration * stream.time_base)
    except (av.error.FFmpegError, OSError, IndexError, TypeError) as error:
        raise InputError(f"{path}: not a readable video ({error}); replace or remove it.") from error


def segments(path: Path, folder: Path, length: float | None = None, minimum: float | None = None) -> list[Segment]:
    """Consecutive ``length``-second segments of a video (default :data:`SEGMENT_SECONDS`); a last part shorter
    than ``minimum`` (default :data:`MIN_SEGMENT_SECONDS`) is dropped."""
    length = SEGMENT_SECONDS if length is None else length
    minimum = MIN_SEGMENT_SECONDS if minimum is None else minimum
    total = duration(path)
    count = math.floor(total / length + 1e-9)
    bounds = [(k * length, (k + 1) * length) for k in range(count)]
    if total - count * length >= minimum:
        bounds.append((count * length, total))
    return [Segment(path, k, start, end, folder) for k, (start, end) in enumerate(bounds)]


def materialise(parts: list[Segment]) -> None:
    """Write each segment's first frame (png), audio (wav at the source rate) and video (25 fps mp4 with that
    audio), decoding the source once; segments already written are kept."""
    from ..video import write_video

    todo = [part for part in parts if not part.ready()]
    if not todo:
        return
    source = parts[0].source
    logger.info("%s: writing %d segment(s) to %s", source, len(todo), parts[0].folder)
    parts[0].folder.mkdir(parents=True, exist_ok=True)
    audio, rate = decode_audio(source)
    if audio.size == 0:
        raise InputError(f"{source}: has no sound; the benchmark needs each clip's speech.")
    frames: Iterator[np.ndarray] = iter_frames(source, FPS)
    for part in parts:  # consecutive: each takes the next frames of the one decoding pass, streamed to its file
        chunk = itertools.islice(frames, round(part.end * FPS) - round(part.start * FPS))
        if part.ready():
            for _ in chunk:
                pass
            continue
        first = next(chunk, None)
        if first is None:
            logger.warning("%s: no frames from %.1f s; segment %s skipped", source, part.start, part.id)
            continue
        sound = audio[round(part.start * rate):round(part.end * rate)]
        write_png(part.portrait, first)
        write_wav(part.audio, sound, rate)
        write_video(part.video, itertools.chain([first], chunk), fps=FPS, audio=sound, sample_rate=rate)


# ------------------------------------------------------------------------------------------------ loaders


HDTF_OPTIONS = {"segment_seconds": f"length in seconds of the segments each clip is cut into (default "
                                   f"{SEGMENT_SECONDS:g}, the paper's)"}


def hdtf_segment_seconds(options: Mapping[str, str] | None) -> float:
    """The ``segment_seconds`` option (default :data:`SEGMENT_SECONDS`); other keys are refused by name."""
    options = check_options("benchmark", "hdtf", options, HDTF_OPTIONS)
    return float_option(options, "segment_seconds", SEGMENT_SECONDS, above=0)


def load_hdtf(root: Path | None, limit: int | None = None,
              options: Mapping[str, str] | None = None) -> list[BenchmarkItem]:
    """HDTF as the paper evaluates talking heads: every 20 s segment (option ``segment_seconds``) of every clip,
    task ``audio_to_motion`` (the segment's speech drives the face of its first frame); references: the segment's
    video and audio. With ``limit``, only the first ``limit`` segments are cut and written."""
    length = hdtf_segment_seconds(options)
    minimum = min(MIN_SEGMENT_SECONDS, length)
    items: list[BenchmarkItem] = []
    for video in _videos(root, "benchmark hdtf", HDTF_LAYOUT):
        if limit is not None and len(items) >= limit:
            break
        parts = segments(video, cache_root("hdtf") / f"{length:g}s" / _source_key(video), length, minimum)
        if not parts:
            logger.warning("%s: shorter than %.0f s; not in the list", video, minimum)
        if limit is not None:
            parts = parts[:limit - len(items)]
        materialise(parts)
        for part in parts:
            if not part.ready():
                continue
            items.append(BenchmarkItem(
                id=part.id, task="audio_to_motion",
                inputs={"audio": str(part.audio), "portrait": str(part.portrait)},
                reference={"video": part.video, "audio": part.audio},
                meta={"source": str(video), "start": part.start, "end": part.end}))
    return items


def load_celebv_dub(root: Path | None) -> list[BenchmarkItem]:
    """CelebV-Dub test: task ``dubbing`` (new speech for the clip's motion, saying its transcript); references:
    the clip (video, and its audio as a wav for the speaker and sync metrics) and the transcript."""
    if root is not None and Path(root).is_dir() and not (Path(root) / "test").is_dir():
        raise InputError(f"benchmark celebv_dub: {root} has no test/ folder; expected {CELEBV_DUB_LAYOUT}.")
    folder = None if root is None else Path(root) / "test"
    videos = _videos(folder, "benchmark celebv_dub", CELEBV_DUB_LAYOUT)
    missing = [video.with_suffix(".txt").name for video in videos if not video.with_suffix(".txt").is_file()]
    if missing:
        raise InputError(f"benchmark celebv_dub: transcripts missing for {len(missing)} clip(s) in {folder}: "
                         f"{missing[:5]}; expected {CELEBV_DUB_LAYOUT}.")
    items = []
    for video in videos:
        text = video.with_suffix(".txt").read_text(encoding="utf-8").strip()
        if not text:
            raise InputError(f"benchmark celebv_dub: {video.with_suffix('.txt')} is empty; it holds the clip's "
                             f"transcript.")
        template = next((video.with_suffix(s) for s in (".npz", ".pkl") if video.with_suffix(s).is_file()), video)
        speech = cache_root("celebv_dub") / _source_key(video) / f"{video.stem}.wav"
        if not speech.is_file():
            audio, rate = decode_audio(video)
            if audio.size == 0:
                raise InputError(f"{video}: has no sound; CelebV-Dub's references are the clips' speech.")
            speech.parent.mkdir(parents=True, exist_ok=True)
            write_wav(speech, audio, rate)
        items.append(BenchmarkItem(
            id=video.stem, task="dubbing", inputs={"motion": str(template), "text": text},
            reference={"video": video, "audio": speech}, text=text, meta={"source": str(video)}))
    return items


BENCHMARKS = {"hdtf": load_hdtf, "celebv_dub": load_celebv_dub}
