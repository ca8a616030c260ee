"""What a JAM-Flow pipeline returns, and writing it to disk (wav, motion .npz/.pkl, mp4), each file atomically."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from diffusers.utils import BaseOutput
from mmflow_motion_liveportrait.plugin import MOTION

from mmflow.io import check_replaceable_file, writable_folder

logger = logging.getLogger(__name__)

OUTPUT_KINDS = ("wav", "npz", "pkl", "mp4")


@dataclass
class JAMFlowOutput(BaseOutput):
    """Per prompt: ``audios`` (float32 waveforms at ``sample_rate``), ``motions`` (LivePortrait expressions
    ``T×21×3`` at ``fps``), ``videos`` (``T×H×W×3`` uint8, when a portrait was given) and the generated ``mels``
    (``n×100``). A stream the task did not produce is None."""

    audios: list[np.ndarray] | None
    motions: list[np.ndarray] | None
    videos: list[np.ndarray] | None
    mels: list[np.ndarray] | None
    sample_rate: int = 24_000
    fps: float = float(MOTION.frame_rate)

    def __len__(self) -> int:  # BaseOutput is an OrderedDict; the number of prompts reads better here
        return len(next(v for v in (self.audios, self.motions, self.videos) if v is not None))

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
                template = template_from_expressions(motion, float(self.fps))
                for kind in ("npz", "pkl"):
                    if kind in targets:
                        written.append(save_motion_template(template, targets[kind]))
            if self.videos is not None and self.videos[i] is not None and "mp4" in targets:
                written.append(write_video(targets["mp4"], self.videos[i], self.fps, audio, self.sample_rate))
        for path in written:
            logger.info("wrote %s", path)
        return written


def check_stem(stem: str) -> str:
    """A stem must be a plain, visible file name: no folder part, no ``..``, not empty, no control characters."""
    problem = None
    if not isinstance(stem, str) or not stem.strip():
        problem = "is empty"
    elif any(sep in stem for sep in ("/", "\\", os.sep, os.altsep) if sep):
        problem = "contains a path separator (files go into the output folder; choose the folder with --out)"
    elif stem.startswith("."):
        problem = "starts with '.' (a hidden file, or '..' outside the output folder)"
    elif any(ord(char) < 32 or ord(char) == 127 for char in stem):
        problem = "contains control characters"
    if problem:
        raise ValueError(f"output stem {stem!r} {problem}; give a plain file name such as 'sample'")
    return stem


def output_paths(out_dir: str | os.PathLike, stem: str, kinds, count: int = 1) -> list[dict[str, Path]]:
    """Per prompt, the file each requested kind is written to: ``<out_dir>/<stem>[_i].<kind>``."""
    unknown = sorted(set(kinds) - set(OUTPUT_KINDS))
    if unknown:
        raise ValueError(f"unknown output kind(s) {unknown}; choose from {list(OUTPUT_KINDS)}")
    check_stem(stem)
    out_dir = Path(out_dir)
    names = [stem] if count == 1 else [f"{stem}_{i}" for i in range(count)]
    return [{kind: out_dir / f"{name}.{kind}" for kind in OUTPUT_KINDS if kind in kinds} for name in names]
