"""Registrations of the JAM-Flow plugin: the paper's tasks, as inpainting conditions over its two streams."""

from __future__ import annotations

from mmflow import TaskInput, TaskPreset, hookimpl


@hookimpl
def mmflow_tasks():
    video_motion = TaskInput("motion", "the video's motion (template, expressions or video): its non-mouth expression "
                             "drives the face and its length the duration", required=True)
    return [
        TaskPreset("talking_head", "text (+ reference voice) + portrait -> talking video with speech",
                   generate=("audio", "motion")),
        TaskPreset("audio_to_motion", "given speech -> facial motion (talking head)", ("motion",), ("audio",)),
        TaskPreset("dubbing", "given motion/video + text -> speech timed to the motion", ("audio",), ("motion",)),
        TaskPreset("video_to_video", "video (its e_rest) + transcript -> new speech and mouth motion",
                   generate=("audio", "motion"), inputs=(video_motion,)),
        TaskPreset("tts", "text (+ reference voice) -> speech", ("audio",), absent=("motion",)),
        TaskPreset("edit", "regenerate time spans of given speech and motion, keep the rest exactly",
                   generate=("audio", "motion"), editable=True),
    ]


@hookimpl
def mmflow_pipelines():
    from .pipeline import JAMFlowPipeline

    return {"JAMFlowPipeline": JAMFlowPipeline}


@hookimpl
def mmflow_models():
    from .default_model import DEFAULT_MODEL_DIR

    return {"default": str(DEFAULT_MODEL_DIR), "jamflow-default": str(DEFAULT_MODEL_DIR)}


@hookimpl
def mmflow_commands():
    from .cli import add_build
    from .data.preprocess import add_preprocess

    return {"build-jamflow": add_build, "preprocess": add_preprocess}


@hookimpl
def mmflow_metrics():
    from .evaluation import METRICS

    return dict(METRICS)


@hookimpl
def mmflow_benchmarks():
    from .evaluation import BENCHMARKS

    return dict(BENCHMARKS)
