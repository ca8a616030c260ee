"""The idle face: seeded blinks every 2-6 s, brow/head drift and gaze on the non-mouth keypoints only, and the
synthetic corpus's faces come from the same generator (its rows did not change when the generator moved here)."""

import hashlib
from fractions import Fraction

import numpy as np
import pytest
from mmflow_motion_liveportrait import expression_layout, idle
from mmflow_motion_liveportrait.keypoints import MOUTH_KEYPOINT_INDICES
from mmflow_motion_liveportrait.plugin import MOTION


def test_idle_motion_is_seeded_and_leaves_the_mouth_alone():
    rate = MOTION.frame_rate
    a = idle.idle_motion(300, seed=1, frame_rate=rate)
    np.testing.assert_array_equal(a, idle.idle_motion(len(a), seed=1, frame_rate=rate))
    assert not np.array_equal(a, idle.idle_motion(len(a), seed=2, frame_rate=rate))
    assert a.dtype == np.float32 and a.shape == (300, 21, 3)
    assert np.all(a[:, list(MOUTH_KEYPOINT_INDICES)] == 0)
    assert np.all(a[:, list(expression_layout.INERT_KEYPOINT_INDICES)] == 0)
    assert a[:, list(expression_layout.BROW_KEYPOINT_INDICES), 1].std(axis=0).min() > 1e-4  # brows move
    assert a[:, list(expression_layout.DRIFT_KEYPOINT_INDICES), :2].std(axis=0).min() > 1e-4  # head drift
    assert a[:, list(expression_layout.EYE_KEYPOINT_INDICES), 0].std(axis=0).min() > 1e-4  # gaze


def test_idle_blinks_every_two_to_six_seconds_at_the_streams_rate():
    for rate in (MOTION.frame_rate, Fraction(30)):
        frames = int(60 * rate)
        closure = expression_layout.amount(idle.idle_motion(frames, seed=4, frame_rate=rate), expression_layout.BLINK)
        closed = closure > 0.5
        onsets = np.flatnonzero(closed[1:] & ~closed[:-1]) + 1
        gaps = np.diff(onsets) / float(rate)
        assert 10 <= len(onsets) <= 30 and gaps.min() >= 1.9 and gaps.max() <= 6.1
        assert 0.9 < closure.max() <= 1.0 + 1e-6 and closed.mean() < 0.1


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="frame_rate"):
        idle.idle_motion(10, seed=0, frame_rate=0)
    with pytest.raises(ValueError, match="num_frames"):
        idle.idle_motion(-1, seed=0, frame_rate=25)


def test_the_corpus_faces_are_unchanged_by_the_move():
    visemes = pytest.importorskip("mmflow_jamflow.data.visemes")
    phones = [("_", 0, 0.3), ("m", 0.3, 0.38), ("A:", 0.38, 0.6), ("u:", 0.6, 0.9), ("s", 0.9, 1.0),
              ("i:", 1.0, 1.3), ("_", 1.3, 9.0)]
    exp = visemes.motion_from_phones(phones, 230, seed=1, speaker=3)
    # Digest of the same call on the code before the generator moved into the motion plugin (c2eb143).
    digest = hashlib.sha256(np.round(exp.astype(np.float64) * 1e5).astype(np.int64).tobytes()).hexdigest()[:16]
    assert digest == "d6f40b8ecf9cb4f3"
