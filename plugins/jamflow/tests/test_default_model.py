"""The embedded default model: it ships with the package, loads without downloads and makes a talking video."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("espeakng_loader")

from mmflow_jamflow import JAMFlowPipeline  # noqa: E402
from mmflow_jamflow.default_model import default_model_path  # noqa: E402


@pytest.fixture(scope="module")
def pipe():
    return JAMFlowPipeline.from_pretrained(default_model_path())


def test_default_model_is_small_and_phoneme_aligned(pipe):
    files = [p for p in default_model_path().rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 30 * 2**20
    assert pipe.aligned and pipe.transformer.stream_names == ["audio", "motion"]


def test_default_model_speaks_with_moving_lips(pipe):
    out = pipe("talking_head", "Open the window, please.", num_inference_steps=8, progress=False)
    wave, motion = out.audios[0], out.motions[0]
    seconds = len(wave) / out.sample_rate
    assert 0.8 < seconds < 4.0 and abs(len(motion) - seconds * 25) <= 1
    assert np.sqrt(np.mean(wave**2)) > 0.01  # audible, not silence
    from mmflow_motion_liveportrait.render import mouth_opening_from_expression

    opening = np.asarray(mouth_opening_from_expression(motion))
    assert opening.max() - opening.min() > 0.2  # the mouth opens and closes


def test_readme_main_command_writes_a_video(tmp_path):
    from mmflow.cli import main

    assert main(["generate", "--text", "Hello there.", "--steps", "4", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "sample.mp4").stat().st_size > 10_000
