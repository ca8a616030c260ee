"""Keypoint maths: pose bins, rotation convention, Eq. 2 transform, e_mouth / e_rest split."""

import math

import numpy as np
import pytest
import torch
from mmflow_motion_liveportrait.keypoints import (
    MOUTH_KEYPOINT_INDICES,
    OFFICIAL_LIP_KEYPOINT_INDICES,
    KeypointInfo,
    merge_expression,
    pose_bins_to_degrees,
    rotation_matrix,
    split_expression,
    transform_keypoints,
)


@pytest.fixture
def ref():
    """The reference helpers; only the tests that compare with LivePortrait's code skip without mimic-head."""
    import lp_reference

    return lp_reference


def test_pose_bins_to_degrees_hand_values():
    logits = torch.full((3, 66), -1e4)
    logits[0, 0] = 0.0  # all mass on bin 0 → -97.5°
    logits[1, 65] = 0.0  # bin 65 → 65·3 − 97.5 = 97.5°
    logits[2] = 0.0  # uniform → mean bin 32.5 → 0°
    assert torch.allclose(pose_bins_to_degrees(logits), torch.tensor([-97.5, 97.5, 0.0]), atol=1e-4)
    two_bins = torch.full((1, 66), -1e4)
    two_bins[0, 40] = two_bins[0, 41] = 0.0  # mean bin 40.5 → 24°
    assert torch.allclose(pose_bins_to_degrees(two_bins), torch.tensor([24.0]), atol=1e-4)


def test_pose_bins_and_rotation_match_reference(ref):
    generator = torch.Generator().manual_seed(0)
    pitch, yaw, roll = (3 * torch.randn(4, 66, generator=generator) for _ in range(3))
    degrees = [pose_bins_to_degrees(x) for x in (pitch, yaw, roll)]
    for ours, logits in zip(degrees, (pitch, yaw, roll), strict=True):
        assert torch.allclose(ours, ref.camera.headpose_pred_to_degree(logits), atol=1e-5)
    expected = ref.camera.get_rotation_matrix(*degrees)
    assert torch.allclose(rotation_matrix(*degrees), expected, atol=1e-6)
    assert torch.allclose(rotation_matrix(*(d[:, None] for d in degrees)), expected, atol=1e-6)  # B×1 input


def test_rotation_convention_by_hand():
    zero = torch.zeros(1)
    # Pure yaw of +90°: Ry maps x → −z, and row vectors use Rᵀ, so [1, 0, 0] @ R = [0, 0, −1].
    rotation = rotation_matrix(zero, torch.tensor([90.0]), zero)
    assert rotation.shape == (1, 3, 3)
    assert torch.allclose(
        torch.tensor([[1.0, 0.0, 0.0]]) @ rotation[0], torch.tensor([[0.0, 0.0, -1.0]]), atol=1e-6
    )
    # Pure roll of +90°: Rz maps x → y.
    rotation = rotation_matrix(zero, zero, torch.tensor([90.0]))
    assert torch.allclose(
        torch.tensor([[1.0, 0.0, 0.0]]) @ rotation[0], torch.tensor([[0.0, 1.0, 0.0]]), atol=1e-6
    )
    # Combined angles: orthonormal with determinant 1.
    rotation = rotation_matrix(torch.tensor([10.0]), torch.tensor([-20.0]), torch.tensor([30.0]))[0]
    assert torch.allclose(rotation @ rotation.T, torch.eye(3), atol=1e-6)
    assert math.isclose(torch.linalg.det(rotation).item(), 1.0, abs_tol=1e-6)


def test_transform_keypoints_hand_computed_example():
    kp = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])  # 1×2×3
    exp = torch.tensor([[[0.0, 0.1, 0.0], [0.0, 0.0, 0.2]]])
    rotation = rotation_matrix(torch.zeros(1), torch.tensor([90.0]), torch.zeros(1))
    scale = torch.tensor([[2.0]])
    t = torch.tensor([[0.1, -0.2, 5.0]])  # t_z must be ignored
    # kp @ R: [1,0,0] → [0,0,−1]; [0,1,0] → [0,1,0]. Add exp, ×2, add (0.1, −0.2, 0).
    expected = torch.tensor([[[0.1, 0.0, -2.0], [0.1, 1.8, 0.4]]])
    result = transform_keypoints(kp, rotation, exp, scale, t)
    assert torch.allclose(result, expected, atol=1e-6)
    flat = transform_keypoints(kp.reshape(1, 6), rotation, exp.reshape(1, 6), scale.reshape(1), t)
    assert torch.allclose(flat, expected, atol=1e-6)


def test_keypoint_info_matches_official_transform(ref):
    generator = torch.Generator().manual_seed(1)
    raw = {
        "pitch": torch.randn(2, 66, generator=generator),
        "yaw": torch.randn(2, 66, generator=generator),
        "roll": torch.randn(2, 66, generator=generator),
        "t": 0.1 * torch.randn(2, 3, generator=generator),
        "exp": 0.05 * torch.randn(2, 63, generator=generator),
        "scale": 1.0 + 0.3 * torch.rand(2, 1, generator=generator),
        "kp": 0.5 * torch.randn(2, 63, generator=generator),
    }
    info = KeypointInfo.from_motion_output(raw)
    assert info.kp.shape == info.exp.shape == (2, 21, 3) and info.pitch.shape == (2,)
    # LivePortrait's wrapper code (transform_keypoint), written out with the reference camera helpers.
    rotation = ref.camera.get_rotation_matrix(
        *(ref.camera.headpose_pred_to_degree(raw[k]) for k in ("pitch", "yaw", "roll"))
    )
    expected = raw["kp"].view(2, 21, 3) @ rotation + raw["exp"].view(2, 21, 3)
    expected = expected * raw["scale"][..., None]
    expected[:, :, 0:2] += raw["t"][:, None, 0:2]
    assert torch.allclose(info.transformed(), expected, atol=1e-5)
    with pytest.raises(ValueError, match="lacks"):
        KeypointInfo.from_motion_output({"kp": raw["kp"]})


def test_transform_rejects_bad_shapes():
    kp = torch.zeros(1, 21, 3)
    rotation = torch.eye(3)[None]
    with pytest.raises(ValueError, match="exp"):
        transform_keypoints(kp, rotation, torch.zeros(1, 20, 3), torch.ones(1, 1), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="rotation"):
        transform_keypoints(kp, torch.eye(3), torch.zeros(1, 21, 3), torch.ones(1, 1), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="scale"):
        transform_keypoints(kp, rotation, torch.zeros(1, 21, 3), torch.ones(1, 2), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="66 bins"):
        pose_bins_to_degrees(torch.zeros(1, 65))


def test_default_mouth_indices_are_the_active_official_lip_keypoints():
    assert MOUTH_KEYPOINT_INDICES == (14, 17, 19, 20)
    assert set(MOUTH_KEYPOINT_INDICES) <= set(OFFICIAL_LIP_KEYPOINT_INDICES)


@pytest.mark.parametrize("indices", [MOUTH_KEYPOINT_INDICES, OFFICIAL_LIP_KEYPOINT_INDICES, (20, 3)])
def test_split_merge_round_trip_torch_and_numpy(indices):
    exp = torch.randn(5, 7, 21, 3, generator=torch.Generator().manual_seed(2))
    e_mouth, e_rest = split_expression(exp, indices)
    assert e_mouth.shape == (5, 7, len(indices), 3) and e_rest.shape == (5, 7, 21 - len(indices), 3)
    assert torch.equal(e_mouth[..., 0, :], exp[..., indices[0], :])
    assert torch.equal(merge_expression(e_mouth, e_rest, indices), exp)
    exp_np = exp.numpy()
    mouth_np, rest_np = split_expression(exp_np, indices)
    merged = merge_expression(mouth_np, rest_np, indices)
    assert isinstance(merged, np.ndarray) and np.array_equal(merged, exp_np)


def test_split_merge_reject_bad_inputs():
    exp = torch.zeros(2, 21, 3)
    with pytest.raises(ValueError, match="distinct"):
        split_expression(exp, (19, 19))
    with pytest.raises(ValueError, match=r"\[0, 21\)"):
        split_expression(exp, (21,))
    with pytest.raises(ValueError, match="e_mouth has 3 keypoints"):
        merge_expression(torch.zeros(2, 3, 3), torch.zeros(2, 17, 3))
