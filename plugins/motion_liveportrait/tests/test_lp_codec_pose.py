"""The motion stream's codec drives the renderer with a given template's head pose, not only its expressions."""

from __future__ import annotations

import numpy as np
import torch
from mmflow_motion_liveportrait.codec import LivePortraitMotionCodec
from mmflow_motion_liveportrait.keypoints import rotation_matrix
from mmflow_motion_liveportrait.motion_stream import MotionNormalizer
from mmflow_motion_liveportrait.motion_template import MotionTemplate, save_motion_template
from mmflow_motion_liveportrait.plugin import MOTION


class _Pipeline:
    motion_normalizer = MotionNormalizer()
    renderer = None


class _RecordingRenderer:
    """Stands in for a renderer: records what it is driven with."""

    def __init__(self):
        self.driven = []

    def render(self, motion, progress=False):
        self.driven.append(motion)
        return np.zeros((1, 4, 4, 3), np.uint8)


def _template(frames=10, fps=25.0) -> MotionTemplate:
    roll = torch.linspace(0, 12, frames)
    rotation = rotation_matrix(torch.zeros(frames), torch.zeros(frames), roll).numpy().astype(np.float32)
    return MotionTemplate(scale=np.full((frames, 1), 1.1, np.float32), R=rotation,
                          exp=np.zeros((frames, 21, 3), np.float32), t=np.ones((frames, 3), np.float32), fps=fps)


def test_a_given_templates_pose_reaches_the_renderer(tmp_path):
    template = _template()
    save_motion_template(template, tmp_path / "head.npz")
    codec = LivePortraitMotionCodec(MOTION, _Pipeline())
    renderer = _RecordingRenderer()
    encoded = codec.encode({"motion": str(tmp_path / "head.npz"), "renderer": renderer}, "given")
    track = codec.fit(encoded, 0, 12)  # two frames longer than the template: its last pose is held
    codec.decode(track.latent, track.cond, encoded)
    driven = renderer.driven[0]
    assert isinstance(driven, MotionTemplate) and driven.num_frames == 12
    np.testing.assert_allclose(driven.R[:10], template.R, atol=1e-6)
    np.testing.assert_allclose(driven.R[10:], template.R[[-1, -1]], atol=1e-6)
    assert np.allclose(driven.scale, 1.1) and np.allclose(driven.t, 1.0)


def test_expressions_without_a_pose_drive_the_renderer_as_they_are():
    codec = LivePortraitMotionCodec(MOTION, _Pipeline())
    renderer = _RecordingRenderer()
    encoded = codec.encode({"motion": np.zeros((5, 21, 3), np.float32), "renderer": renderer}, "given")
    track = codec.fit(encoded, 0, 5)
    codec.decode(track.latent, track.cond, encoded)
    assert isinstance(renderer.driven[0], np.ndarray) and renderer.driven[0].shape == (5, 21, 3)
