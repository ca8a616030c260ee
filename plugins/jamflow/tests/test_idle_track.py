"""Tasks without given motion condition the motion stream on an idle face (blinks, brows, gaze, drift) from the
motion plugin, switchable off or to a template; the CLI exposes it (--idle) and the video size (--size)."""

from __future__ import annotations

import numpy as np
import pytest
from mmflow_motion_liveportrait.expression_layout import BLINK, BROW_KEYPOINT_INDICES, amount
from mmflow_motion_liveportrait.keypoints import MOUTH_KEYPOINT_INDICES
from mmflow_motion_liveportrait.motion_template import MotionTemplate, save_motion_template

pytest.importorskip("espeakng_loader")
REST = [k for k in range(21) if k not in MOUTH_KEYPOINT_INDICES]
COMMON = {"num_inference_steps": 2, "progress": False, "guidance_scale": 1.0, "seed": 0}


@pytest.fixture(scope="module")
def pipe():
    from mmflow_jamflow import JAMFlowPipeline
    from mmflow_jamflow.default_model import default_model_path

    return JAMFlowPipeline.from_pretrained(default_model_path())


def test_talking_head_blinks_with_the_natural_idle_track_and_is_frozen_without(pipe):
    text = "Good morning, how are you today? I hope you slept well."
    natural = pipe("talking_head", text, **COMMON).motions[0]
    frozen = pipe("talking_head", text, idle="off", **COMMON).motions[0]
    # Off: the release's behaviour, the mean face never moves; natural: the eyes close fully at least once and
    # the brows move, while the closure stays near zero most of the time.
    assert np.ptp(frozen[:, REST], axis=0).max() < 1e-6
    closure = amount(natural, BLINK) - amount(frozen, BLINK)
    assert closure.max() > 0.9 and np.mean(closure > 0.5) < 0.2
    assert np.ptp(natural[:, list(BROW_KEYPOINT_INDICES), 1], axis=0).min() > 1e-3
    np.testing.assert_array_equal(natural, pipe("talking_head", text, **COMMON).motions[0])  # seeded


def test_a_templates_non_mouth_motion_conditions_the_stream(pipe, tmp_path):
    frames = 40
    exp = np.zeros((frames, 21, 3), np.float32)
    exp[:, 1, 1] = np.linspace(-0.01, 0.01, frames)  # a brow that rises steadily
    template = MotionTemplate(scale=np.ones((frames, 1)), R=np.tile(np.eye(3), (frames, 1, 1)), exp=exp,
                              t=np.zeros((frames, 3)), fps=25)
    path = save_motion_template(template, tmp_path / "idle.npz")
    result = pipe("talking_head", "Yes, of course.", idle=path, **COMMON).motions[0]
    brow = result[:, 1, 1]
    # Played at the stream's rate, back and forth: it follows the template's first frames exactly.
    np.testing.assert_allclose(brow[:frames], exp[: len(brow[:frames]), 1, 1], atol=1e-5)
    with pytest.raises(ValueError, match="idle must be one of"):
        pipe("talking_head", "Yes.", idle="sometimes", **COMMON)


def test_cli_size_and_idle(tmp_path):
    from mmflow_motion_liveportrait.video import read_video

    from mmflow.cli import main

    out = tmp_path / "out"
    assert main(["generate", "--text", "Yes.", "--steps", "2", "--size", "256", "--idle", "off", "--outputs", "mp4",
                 "--out", str(out)]) == 0
    frames = read_video(out / "sample.mp4", read_audio=False).frames
    assert frames.shape[1:] == (256, 256, 3)
