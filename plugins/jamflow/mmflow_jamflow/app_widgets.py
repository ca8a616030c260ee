"""JAM-Flow's widgets in ``mmflow app``: text boxes, audio upload or recording, the bundled portrait, and outputs
a user can watch and take away (the video with sound, the wav, the motion files, a mouth-opening plot).

``JAMFlowPipeline.app_widgets()`` returns them; the core app (``mmflow.app``) builds the tabs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mmflow.app import AppWidgets
from mmflow.tasks import TaskInput, TaskPreset

AUDIO_SOURCES = ["upload", "microphone"]
NUMBERS = {"speed": 1.0, "target_rms": 0.1}
"""Numeric inputs and their defaults (a Number widget always holds a number, so it starts at the default)."""
MOTION_FILES = [".pkl", ".npz", ".mp4", ".mov", ".avi", ".webm", ".mkv"]


def mouth_and_envelope(audio: np.ndarray, motion: np.ndarray, sample_rate: int, fps: float) -> dict[str, np.ndarray]:
    """Per motion frame: the time, the mouth opening (0-1) and the speech RMS envelope (scaled to its peak)."""
    from mmflow_motion_liveportrait.render import mouth_opening_from_expression

    opening = mouth_opening_from_expression(motion)
    hop = sample_rate / fps
    starts = (np.arange(len(opening)) * hop).astype(int)
    ends = np.minimum(((np.arange(len(opening)) + 1) * hop).astype(int), len(audio))
    rms = np.array([np.sqrt(np.mean(np.square(audio[s:e], dtype=np.float64))) if e > s else 0.0
                    for s, e in zip(starts, ends, strict=True)])
    envelope = rms / rms.max() if rms.max() > 0 else rms
    return {"time": np.arange(len(opening)) / fps, "mouth opening": opening, "speech envelope": envelope}


class JAMFlowWidgets(AppWidgets):
    default_guidance = 2.0

    def input_component(self, gr, item: TaskInput):
        label = f"{item.name}{'' if item.required else ' (optional)'}"
        name = item.name
        if name in ("text", "ref_text"):
            return gr.Textbox(label=label, info=item.description, lines=3 if name == "text" else 1,
                              elem_id=None if name != "text" else "text-input")
        if name in ("ref_audio", "audio"):
            return gr.Audio(label=f"{label}: {item.description}", type="filepath", sources=AUDIO_SOURCES)
        if name == "portrait":
            from mmflow_motion_liveportrait.face import demo_portrait_path

            return gr.Image(label=f"{label}: image to animate (the bundled portrait by default)", type="filepath",
                            value=str(demo_portrait_path()), height=256)
        if name == "motion":
            return gr.File(label=f"{label}: {item.description}", type="filepath", file_types=MOTION_FILES)
        if name == "idle":
            return gr.Dropdown(["natural", "off"], value="natural", label=label, info=item.description)
        if name in NUMBERS:
            return gr.Number(value=NUMBERS[name], label=label, info=item.description)
        if name == "size":
            return gr.Number(value=0, precision=0, label=f"{label} (0: the default)", info=item.description)
        if name == "liveportrait_weights":
            return gr.Textbox(label=label, info=item.description, placeholder="/path/to/liveportrait/weights")
        if name == "renderer":
            return None  # a Python object; the page gives portrait / liveportrait_weights instead
        return super().input_component(gr, item)

    def convert(self, name: str, value):
        if name == "size" and not value:  # the Number widget's 0: the portrait's size
            return None
        return super().convert(name, value)

    def output_components(self, gr) -> list:
        return [
            gr.Video(label="video with sound", elem_id="output-video"),
            gr.Audio(label="speech (wav)", type="filepath", elem_id="output-audio"),
            gr.File(label="files: wav, motion (.npz, LivePortrait .pkl), mp4", file_count="multiple"),
            gr.LinePlot(x="time", y="value", color="series", label="mouth opening and speech envelope",
                        x_title="seconds", y_title="0-1", height=300),
        ]

    def save(self, pipe, result, folder: Path) -> list[Path]:
        return result.save(folder, "sample")

    def present(self, task: TaskPreset, result, paths: Sequence[Path]) -> list:
        import pandas as pd

        by_kind = {path.suffix: str(path) for path in paths}
        plot = None
        if result.audios is not None and result.motions is not None:
            curves = mouth_and_envelope(result.audios[0], result.motions[0], result.sample_rate, result.fps)
            plot = pd.DataFrame([{"time": t, "value": float(curves[name][i]), "series": name}
                                 for name in ("mouth opening", "speech envelope")
                                 for i, t in enumerate(curves["time"])])
        return [by_kind.get(".mp4"), by_kind.get(".wav"), [str(path) for path in paths], plot]
