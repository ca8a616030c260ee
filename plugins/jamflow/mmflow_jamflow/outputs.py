"""What a JAM-Flow pipeline returns, and writing it to disk (wav, motion .npz/.pkl, mp4), each file atomically."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from diffusers.utils import BaseOutput
from mmflow_motion_liveportrait.frames import RenderedVideo
from mmflow_motion_liveportrait.plugin import MOTION

from mmflow.io import check_replaceable_file, check_stem, writable_folder

logger = logging.getLogger(__name__)

OUTPUT_KINDS = ("wav", "npz", "pkl", "mp4")


@dataclass
class JAMFlowOutput(BaseOutput):
    """Per prompt: ``audios`` (float32 waveforms at ``sample_rate``), ``motions`` (LivePortrait expressions
    ``T×21×3`` at ``fps``), ``videos`` (``T×H×W×3`` uint8, when a portrait was given) and the generated ``mels``
    (``n×100``). A video is a ``RenderedVideo``: it reads like the array (``len``, ``shape``, indexing,
    ``np.asarray``) but its frames are rendered when read, so ``save`` streams them into the mp4 batch by batch
    and a long clip never holds all its frames in memory. A stream the task did not produce is None. ``poses``: per prompt, the head pose of the given
    motion template (``scale``, ``R``, ``t`` per frame) that the saved templates keep, or None."""

    audios: list[np.ndarray] | None
    motions: list[np.ndarray] | None
    videos: list[RenderedVideo | np.ndarray] | None
    mels: list[np.ndarray] | None
    sample_rate: int = 24_000
    fps: float = float(MOTION.frame_rate)
    poses: list[dict | None] | None = None

    def __len__(self) -> int:  # BaseOutput is an OrderedDict; the number of prompts reads better here
        return len(next(v for v in (self.audios, self.motions, self.videos) if v is not None))

    def remove_silence(self, min_silence: float = 1.0, keep: float = 0.5, threshold_db: float = -50.0) -> JAMFlowOutput:
        """Shorten silences of ``min_silence`` s or more to ``keep`` s on each side, as F5-TTS's ``remove_silence``
        does (pydub's ``split_on_silence``: 1 s, −50 dBFS, 0.5 s kept), cutting the motion, the video and the mel at
        the same instants so they stay in sync. A new output; this one is unchanged."""
        if self.audios is None:
            return self
        kept = [_voiced_spans(a, self.sample_rate, self.fps, min_silence, keep, threshold_db) for a in self.audios]

        def piece(item, spans, rate):
            if item is None:
                return None
            cuts = [slice(round(a * rate), round(b * rate)) for a, b in spans]
            if isinstance(item, RenderedVideo):  # cut without rendering: the kept frames render when written
                return item.select(np.concatenate([np.arange(len(item))[c] for c in cuts]))
            return np.concatenate([item[c] for c in cuts])

        def cut(items, rate):
            return None if items is None else [piece(item, spans, rate) for item, spans in zip(items, kept, strict=True)]

        mel_rate = self.sample_rate / 256
        poses = None
        if self.poses is not None:  # held to the motion's length, then cut like it
            motions = self.motions or [None] * len(self.poses)
            poses = [None if pose is None or motion is None else
                     {key: piece(np.asarray(value)[np.minimum(np.arange(len(motion)), len(value) - 1)], spans, self.fps)
                      for key, value in pose.items()}
                     for pose, motion, spans in zip(self.poses, motions, kept, strict=True)]
        return JAMFlowOutput(audios=cut(self.audios, self.sample_rate), motions=cut(self.motions, self.fps),
                             videos=cut(self.videos, self.fps), mels=cut(self.mels, mel_rate),
                             sample_rate=self.sample_rate, fps=self.fps, poses=poses)

    def save(self, out_dir: str | os.PathLike, stem: str = "sample", kinds=OUTPUT_KINDS) -> list[Path]:
        """Write ``<stem>[_i].wav/.npz/.pkl/.mp4`` into ``out_dir`` (only what this output holds).

        Every path is checked before the first file is written: a folder (or other non-file) at one of them is
        refused, never replaced.
        """
        from mmflow_audio_f5tts.audio_io import write_wav
        from mmflow_motion_liveportrait.motion_template import save_motion_template, template_from_expressions
        from mmflow_motion_liveportrait.video import write_video

        paths = output_paths(out_dir, stem, kinds, len(self))
        for path in (p for per_prompt in paths for p in per_prompt.values()):
            check_replaceable_file(path)
        writable_folder(out_dir)
        written = []
        for i, targets in enumerate(paths):
            audio = None if self.audios is None else self.audios[i]
            motion = None if self.motions is None else self.motions[i]
            if audio is not None and "wav" in targets:
                written.append(write_wav(targets["wav"], audio, self.sample_rate))
            if motion is not None:
                pose = None if self.poses is None else self.poses[i]
                template = template_from_expressions(motion, float(self.fps), pose)
                for kind in ("npz", "pkl"):
                    if kind in targets:
                        written.append(save_motion_template(template, targets[kind]))
            if self.videos is not None and self.videos[i] is not None and "mp4" in targets:
                written.append(write_video(targets["mp4"], self.videos[i], self.fps, audio, self.sample_rate))
        for path in written:
            logger.info("wrote %s", path)
        return written


def _voiced_spans(audio: np.ndarray, sample_rate: int, fps: float, min_silence: float, keep: float,
                  threshold_db: float) -> list[tuple[float, float]]:
    """The ``(start, end)`` seconds to keep: everything but the middle of silences longer than ``min_silence``,
    on the motion's frame grid (so every stream is cut at the same instant)."""
    hop = max(1, round(sample_rate / fps))  # one motion frame of samples
    frames = len(audio) // hop
    if frames == 0:
        return [(0.0, len(audio) / sample_rate)]
    power = np.square(audio[: frames * hop].astype(np.float64)).reshape(frames, hop).mean(1)
    silent = 10 * np.log10(np.maximum(power, 1e-20)) < threshold_db
    spans, start, run_start = [], 0, None
    keep_frames, min_frames = int(keep * fps + 0.5), int(min_silence * fps + 0.5)
    for i, quiet in enumerate([*silent, False]):
        if quiet and run_start is None:
            run_start = i
        elif not quiet and run_start is not None:
            if i - run_start >= min_frames:
                head = run_start + keep_frames if run_start > 0 else run_start  # leading silence: no head to keep
                tail = i - keep_frames if i < frames else i
                if tail > head:
                    spans.append((start, head))
                    start = tail
            run_start = None
    spans.append((start, None))
    end = len(audio) / sample_rate
    return [(a / fps, end if b is None else b / fps) for a, b in spans if b is None or b > a]


def output_paths(out_dir: str | os.PathLike, stem: str, kinds, count: int = 1) -> list[dict[str, Path]]:
    """Per prompt, the file each requested kind is written to: ``<out_dir>/<stem>[_i].<kind>``."""
    unknown = sorted(set(kinds) - set(OUTPUT_KINDS))
    if unknown:
        raise ValueError(f"unknown output kind(s) {unknown}; choose from {list(OUTPUT_KINDS)}")
    check_stem(stem)
    out_dir = Path(out_dir)
    names = [stem] if count == 1 else [f"{stem}_{i}" for i in range(count)]
    return [{kind: out_dir / f"{name}.{kind}" for kind in OUTPUT_KINDS if kind in kinds} for name in names]
