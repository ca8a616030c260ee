"""Keypoint maths on more shapes than one batch axis, where the mutation study (benchmarks/mutation.py) found it
unguarded: pose bins and rotations over B×T, expression split/merge on 2-D, 3-D and numpy input, and the
shape checks of transform_keypoints."""

import numpy as np
import pytest
import torch
from mmflow_motion_liveportrait.keypoints import (
    _as_points,
    merge_expression,
    pose_bins_to_degrees,
    rotation_matrix,
    split_expression,
    transform_keypoints,
)


def test_pose_bins_over_batch_and_time():
    logits = torch.randn(2, 3, 66, generator=torch.Generator().manual_seed(0))
    out = pose_bins_to_degrees(logits)
    assert out.shape == (2, 3)
    flat = pose_bins_to_degrees(logits.reshape(6, 66)).reshape(2, 3)
    torch.testing.assert_close(out, flat)
    assert pose_bins_to_degrees(torch.zeros(2, 66, device="meta")).device.type == "meta"
    with pytest.raises(ValueError, match="66 bins"):
        pose_bins_to_degrees(torch.zeros(66, 2))


def test_rotations_over_batch_and_time_with_a_trailing_one():
    g = torch.Generator().manual_seed(1)
    pitch, yaw, roll = (torch.rand(2, 3, 1, generator=g) * 180 - 90 for _ in range(3))
    rot = rotation_matrix(pitch, yaw, roll)
    assert rot.shape == (2, 3, 3, 3)
    flat = rotation_matrix(pitch.reshape(6), yaw.reshape(6), roll.reshape(6)).reshape(2, 3, 3, 3)
    torch.testing.assert_close(rot, flat)


@pytest.mark.parametrize("shape", [(6, 2), (2, 5), (2, 4, 3, 1), (12,)])
def test_points_must_be_b_by_3k_or_b_by_k_by_3(shape):
    with pytest.raises(ValueError, match="must be B×3K or B×K×3"):
        _as_points("kp", torch.zeros(shape), 2)


def test_points_from_b_by_3k_and_b_by_k_by_3():
    flat = torch.arange(12.0).reshape(2, 6)
    torch.testing.assert_close(_as_points("kp", flat, 2), flat.reshape(2, 2, 3))
    points = torch.arange(18.0).reshape(2, 3, 3)
    assert _as_points("kp", points, 2) is points


@pytest.mark.parametrize("lead", [(), (2,), (2, 4)])
def test_split_and_merge_round_trip_with_keypoint_zero(lead):
    exp = torch.randn(*lead, 6, 3)
    mouth, rest = split_expression(exp, [5, 0])
    assert torch.equal(mouth, exp[..., [5, 0], :]) and torch.equal(rest, exp[..., [1, 2, 3, 4], :])
    assert torch.equal(merge_expression(mouth, rest, [5, 0]), exp)


def test_merge_numpy_keeps_the_common_dtype():
    mouth, rest = np.ones((2, 2, 3), np.float32), np.zeros((2, 4, 3), np.float32)
    assert merge_expression(mouth, rest, [5, 0]).dtype == np.float32
    assert merge_expression(mouth.astype(np.float64), rest, [5, 0]).dtype == np.float64
    assert merge_expression(mouth, rest.astype(np.float64), [5, 0]).dtype == np.float64


def test_split_and_merge_shape_checks():
    with pytest.raises(ValueError, match="exp must be"):
        split_expression(torch.zeros(3), [0])
    with pytest.raises(ValueError, match="e_mouth and e_rest"):
        merge_expression(torch.zeros(1, 2, 3), torch.zeros(1, 3, 2), [0, 1])
    with pytest.raises(ValueError, match="e_mouth and e_rest"):
        merge_expression(torch.zeros(2, 2, 3), torch.zeros(1, 3, 3), [0, 1])


def test_transform_keypoints_translation_checks():
    kp, exp = torch.zeros(2, 4, 3), torch.zeros(2, 4, 3)
    rot, scale = torch.eye(3).expand(2, 3, 3), torch.ones(2)
    out = transform_keypoints(kp, rot, exp, scale, torch.tensor([[1.0, 2.0], [3.0, 4.0]]))  # B×2 is fine
    assert out[:, :, :2].tolist() == [[[1.0, 2.0]] * 4, [[3.0, 4.0]] * 4] and (out[..., 2] == 0).all()
    with pytest.raises(ValueError, match="t must be"):
        transform_keypoints(kp, rot, exp, scale, torch.zeros(3, 3))
