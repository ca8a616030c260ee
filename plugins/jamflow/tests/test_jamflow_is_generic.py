"""JAM-Flow is a registered configuration of the generic pipeline: its tasks declare their inputs, the model says
how text conditions it, and no JAM-Flow code branches on a task's name."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("espeakng_loader")

from mmflow_audio_f5tts.tokenizer import F5Tokenizer  # noqa: E402
from mmflow_jamflow import JAMFlowPipeline  # noqa: E402
from mmflow_jamflow.default_model import default_model_path  # noqa: E402

from mmflow.pipeline import MMFlowPipeline  # noqa: E402

PLUGIN = Path(__file__).resolve().parents[1] / "mmflow_jamflow"
TASKS = ("talking_head", "tts", "audio_to_motion", "dubbing", "video_to_video", "edit")


@pytest.fixture(scope="module")
def pipe():
    return JAMFlowPipeline.from_pretrained(default_model_path())


def test_a_tokenizer_that_contradicts_the_model_is_refused(pipe, tmp_path):
    (tmp_path / "vocab.txt").write_text("".join(c + "\n" for c in " abcdefghijklmnopqrstuvwxyz.,"))
    filler = F5Tokenizer(str(tmp_path / "vocab.txt"), tokenizer_mode="char")
    assert pipe.aligned  # read from the model: its audio backbone's text_conditioning
    with pytest.raises(ValueError, match="trained with text_conditioning='aligned'; use a PhonemeTokenizer"):
        JAMFlowPipeline(pipe.transformer, pipe.scheduler, filler, pipe.motion_normalizer)


def test_tasks_and_their_inputs_come_from_the_registry(pipe):
    assert isinstance(pipe, MMFlowPipeline) and set(TASKS) <= set(pipe.tasks)
    inputs = {task: {i.name: i.required for i in pipe.task_inputs(task)} for task in TASKS}
    assert inputs["tts"] == {"text": True, "ref_audio": False, "ref_text": False, "speed": False,
                             "target_rms": False, "resampler": False}  # motion absent: no portrait, idle, motion
    assert inputs["audio_to_motion"]["audio"] and not inputs["audio_to_motion"]["text"]
    assert inputs["dubbing"]["motion"] and inputs["dubbing"]["text"] and "idle" not in inputs["dubbing"]
    assert inputs["video_to_video"]["motion"]  # the task's own declaration makes the codec's optional input required
    assert inputs["edit"]["audio"] and inputs["edit"]["motion"] and inputs["edit"]["text"]


def test_no_jamflow_code_branches_on_a_task_name():
    names = "|".join(TASKS)
    branch = re.compile(rf"""(==|!=|\bin)\s*[(\[]?\s*["']({names})["']""")
    for path in PLUGIN.rglob("*.py"):
        hits = [line for line in path.read_text().splitlines() if branch.search(line) and "choices" not in line]
        assert not hits, f"{path.name} branches on task names: {hits}"
    assert len((PLUGIN / "pipeline.py").read_text().splitlines()) < 200  # JAM-Flow-specific pipeline code
