"""What a JAM-Flow pipeline returns, and writing it to disk (wav, motion .npz/.pkl, mp4), each file atomically."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from diffusers.utils import BaseOutput

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
    fps: int = 25

    def __len__(self) -> int:  # BaseOutput is an OrderedDict; the number of prompts reads better here
        return len(next(v for v in (self.audios, self.motions, self.videos) if v is not None))

    def save(self, out_dir: str | os.PathLike, stem: str = "sample", kinds=OUTPUT_KINDS) -> list[Path]:
        """Write ``<stem>[_i].wav/.npz/.pkl/.mp4`` into ``out_dir`` (only what this output holds)."""
        from mmflow_audio_f5tts.audio_io import write_wav
        from mmflow_motion_liveportrait.motion_template import MotionTemplate, save_motion_template
        from mmflow_motion_liveportrait.video import write_video

        unknown = sorted(set(kinds) - set(OUTPUT_KINDS))
        if unknown:
            raise ValueError(f"unknown output kind(s) {unknown}; choose from {list(OUTPUT_KINDS)}")
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        count = len(self)
        for i in range(count):
            name = stem if count == 1 else f"{stem}_{i}"
            audio = None if self.audios is None else self.audios[i]
            motion = None if self.motions is None else self.motions[i]
            if audio is not None and "wav" in kinds:
                written.append(write_wav(out_dir / f"{name}.wav", audio, self.sample_rate))
            if motion is not None:
                template = MotionTemplate(
                    scale=np.ones((len(motion), 1), np.float32),
                    R=np.broadcast_to(np.eye(3, dtype=np.float32), (len(motion), 3, 3)).copy(),
                    exp=motion.astype(np.float32),
                    t=np.zeros((len(motion), 3), np.float32),
                    fps=float(self.fps),
                )
                for kind in ("npz", "pkl"):
                    if kind in kinds:
                        written.append(save_motion_template(template, out_dir / f"{name}.{kind}"))
            if self.videos is not None and self.videos[i] is not None and "mp4" in kinds:
                written.append(
                    write_video(out_dir / f"{name}.mp4", self.videos[i], self.fps, audio, self.sample_rate)
                )
        for path in written:
            logger.info("wrote %s", path)
        return written
