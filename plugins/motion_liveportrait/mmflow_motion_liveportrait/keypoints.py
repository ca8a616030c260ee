"""LivePortrait's motion representation: pose bins, rotation, keypoint transform, mouth split.

A frame's motion is ``(pitch, yaw, roll, t, exp, scale)`` applied to the source's canonical keypoints ``kp``
(paper Eq. 2). Keypoints are row vectors in the normalised ``[-1, 1]³`` volume, ordered ``(x, y, z)`` with x
right, y down and z into the screen.

Motion templates (sequences of these per-frame values on disk) live in ``motion_template.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

logger = logging.getLogger(__name__)

NUM_KEYPOINTS = 21

# Pose bins (src/utils/camera.py): 66 bins of 3°; the softmax expectation of the bin index, times 3, minus 97.5.
NUM_POSE_BINS = 66
POSE_BIN_DEGREES = 3.0
POSE_OFFSET_DEGREES = 97.5

MOUTH_KEYPOINT_INDICES: tuple[int, ...] = (14, 17, 19, 20)
"""Default mouth keypoints for the e_mouth / e_rest split.

Why these four: LivePortrait's own "lip" region is ``[6, 12, 14, 17, 19, 20]`` (``live_portrait_pipeline.py``,
copied by every audio-driven fork), but kps 6 and 12 carry no expression motion in the 1151 frames of the 12
official motion templates (max |exp| ≤ 2e-4). Among the rest, speech motion is dominated by kp 19 (its y axis
alone is PC1, 42 % of the exp variance: jaw opening), then 20, 14 and 17. Of the lip set, the official
lip-editing sliders touch only these four, and ComfyUI-AdvancedLivePortrait's mouth retargeting uses exactly
``(14, 17, 19, 20)``.
See shared/reference/liveportrait.md §3. Caveat: a statistic over demo clips, not an ablation with weights.
"""

OFFICIAL_LIP_KEYPOINT_INDICES: tuple[int, ...] = (6, 12, 14, 17, 19, 20)
"""LivePortrait's ``lip_idx`` (its "lip" animation region); a superset of :data:`MOUTH_KEYPOINT_INDICES`."""


# --------------------------------------------------------------------------------------------------------------
# Pose, rotation, keypoint transform
# --------------------------------------------------------------------------------------------------------------


def pose_bins_to_degrees(logits: torch.Tensor) -> torch.Tensor:
    """Pose-bin logits ``...×66`` → angle in degrees ``...`` (range ±97.5°), as LivePortrait decodes pitch/yaw/roll."""
    if logits.shape[-1] != NUM_POSE_BINS:
        raise ValueError(
            f"pose logits must have {NUM_POSE_BINS} bins in the last axis; got shape {tuple(logits.shape)}. "
            "Pass the raw pitch/yaw/roll head output of the motion extractor."
        )
    bins = torch.arange(NUM_POSE_BINS, dtype=logits.dtype, device=logits.device)
    expected_bin = (torch.softmax(logits, dim=-1) * bins).sum(dim=-1)
    return expected_bin * POSE_BIN_DEGREES - POSE_OFFSET_DEGREES


def rotation_matrix(pitch: torch.Tensor, yaw: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """Angles in degrees, shape ``S`` (``B×1`` counts as ``B``) → rotations ``S×3×3``.

    LivePortrait's convention: pitch about x, yaw about y, roll about z, right-handed, and the returned matrix is
    ``(Rz · Ry · Rx)ᵀ`` because keypoints are row vectors (``kp @ R`` applies ``Rz·Ry·Rx``).
    """
    angles = []
    for angle in (pitch, yaw, roll):
        angle = torch.as_tensor(angle)
        if angle.ndim >= 2 and angle.shape[-1] == 1:
            angle = angle.squeeze(-1)  # accept B×1 as well as B
        angles.append(torch.deg2rad(angle))
    try:
        x, y, z = torch.broadcast_tensors(*angles)
    except RuntimeError as error:
        raise ValueError(
            f"pitch, yaw and roll must have the same shape; got {[tuple(a.shape) for a in angles]}."
        ) from error
    one, zero = torch.ones_like(x), torch.zeros_like(x)

    def matrix(rows: list[list[torch.Tensor]]) -> torch.Tensor:
        return torch.stack([torch.stack(row, dim=-1) for row in rows], dim=-2)

    rot_x = matrix([[one, zero, zero], [zero, x.cos(), -x.sin()], [zero, x.sin(), x.cos()]])
    rot_y = matrix([[y.cos(), zero, y.sin()], [zero, one, zero], [-y.sin(), zero, y.cos()]])
    rot_z = matrix([[z.cos(), -z.sin(), zero], [z.sin(), z.cos(), zero], [zero, zero, one]])
    return (rot_z @ rot_y @ rot_x).transpose(-1, -2)


def _as_points(name: str, value: torch.Tensor, batch: int) -> torch.Tensor:
    """``B×3K`` or ``B×K×3`` → ``B×K×3``."""
    if value.ndim == 2 and value.shape[1] % 3 == 0:
        return value.reshape(value.shape[0], -1, 3)
    if value.ndim == 3 and value.shape[2] == 3:
        return value
    raise ValueError(f"{name} must be B×3K or B×K×3 (B={batch}); got shape {tuple(value.shape)}.")


def transform_keypoints(
    kp: torch.Tensor, rotation: torch.Tensor, exp: torch.Tensor, scale: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """Paper Eq. 2: ``x = scale · (kp @ R + exp) + t`` with only ``tx, ty`` applied (t_z is treated as 0).

    kp, exp: ``B×K×3`` (or ``B×3K``); rotation: ``B×3×3`` from :func:`rotation_matrix`; scale: ``B×1`` or ``B``;
    t: ``B×3`` (or ``B×2``). Returns ``B×K×3``. LivePortrait drops t_z ("remove z, only apply tx ty") and also
    zeroes it in the driving motion, so a non-zero t_z is ignored here too.
    """
    batch = kp.shape[0]
    kp = _as_points("kp", kp, batch)
    exp = _as_points("exp", exp, batch)
    if exp.shape != kp.shape:
        raise ValueError(f"exp shape {tuple(exp.shape)} does not match kp shape {tuple(kp.shape)}.")
    if rotation.shape != (batch, 3, 3):
        raise ValueError(f"rotation must be B×3×3 with B={batch}; got shape {tuple(rotation.shape)}.")
    if scale.numel() != batch:
        raise ValueError(f"scale must be B×1 or B with B={batch}; got shape {tuple(scale.shape)}.")
    scale = scale.reshape(batch, 1, 1)
    if t.shape[0] != batch or t.shape[-1] not in (2, 3):
        raise ValueError(f"t must be B×3 (or B×2) with B={batch}; got shape {tuple(t.shape)}.")
    x = scale * (kp @ rotation + exp)  # B×K×3
    shift = torch.zeros_like(x[:, :1, :])  # B×1×3, z stays 0
    shift[..., :2] = t[:, None, :2]
    return x + shift


@dataclass
class KeypointInfo:
    """The motion extractor's output in keypoint form (LivePortrait's ``get_kp_info`` with refinement).

    pitch, yaw, roll: ``B`` degrees. t: ``B×3``. exp, kp: ``B×K×3``. scale: ``B×1``.
    """

    pitch: torch.Tensor
    yaw: torch.Tensor
    roll: torch.Tensor
    t: torch.Tensor
    exp: torch.Tensor
    scale: torch.Tensor
    kp: torch.Tensor

    @classmethod
    def from_motion_output(cls, output: Mapping[str, torch.Tensor]) -> KeypointInfo:
        """Decode M's raw heads (a :class:`MotionExtractorOutput` or the official dict)."""
        missing = [key for key in ("pitch", "yaw", "roll", "t", "exp", "scale", "kp") if key not in output]
        if missing:
            raise ValueError(f"motion-extractor output lacks {missing}; expected the seven heads of M.")
        batch = output["kp"].shape[0]
        return cls(
            pitch=pose_bins_to_degrees(output["pitch"]),
            yaw=pose_bins_to_degrees(output["yaw"]),
            roll=pose_bins_to_degrees(output["roll"]),
            t=output["t"],
            exp=_as_points("exp", output["exp"], batch),
            scale=output["scale"],
            kp=_as_points("kp", output["kp"], batch),
        )

    @property
    def rotation(self) -> torch.Tensor:
        """``B×3×3`` rotation for row-vector keypoints."""
        return rotation_matrix(self.pitch, self.yaw, self.roll)

    def transformed(self) -> torch.Tensor:
        """The driving/source keypoints ``x`` (``B×K×3``) that W consumes."""
        return transform_keypoints(self.kp, self.rotation, self.exp, self.scale, self.t)


# --------------------------------------------------------------------------------------------------------------
# e_mouth / e_rest split
# --------------------------------------------------------------------------------------------------------------


def _checked_indices(mouth_indices: Sequence[int], num_kp: int) -> tuple[list[int], list[int]]:
    mouth = [int(i) for i in mouth_indices]
    if len(set(mouth)) != len(mouth) or not all(0 <= i < num_kp for i in mouth):
        raise ValueError(
            f"mouth_indices must be distinct keypoint indices in [0, {num_kp}); got {list(mouth_indices)}."
        )
    rest = [i for i in range(num_kp) if i not in set(mouth)]
    return mouth, rest


def split_expression(exp, mouth_indices: Sequence[int] = MOUTH_KEYPOINT_INDICES):
    """``exp`` ``...×K×3`` (torch or numpy) → ``(e_mouth ...×M×3, e_rest ...×(K−M)×3)``.

    e_mouth keeps the order of ``mouth_indices``; e_rest keeps the remaining keypoints in ascending order.
    """
    if exp.ndim < 2 or exp.shape[-1] != 3:
        raise ValueError(f"exp must be ...×K×3; got shape {tuple(exp.shape)}.")
    mouth, rest = _checked_indices(mouth_indices, exp.shape[-2])
    return exp[..., mouth, :], exp[..., rest, :]


def merge_expression(e_mouth, e_rest, mouth_indices: Sequence[int] = MOUTH_KEYPOINT_INDICES):
    """Inverse of :func:`split_expression`: ``(...×M×3, ...×(K−M)×3)`` → ``...×K×3`` (same array type)."""
    if e_mouth.shape[:-2] != e_rest.shape[:-2] or e_mouth.shape[-1] != 3 or e_rest.shape[-1] != 3:
        raise ValueError(
            f"e_mouth and e_rest must be ...×M×3 and ...×R×3 with equal leading axes; got "
            f"{tuple(e_mouth.shape)} and {tuple(e_rest.shape)}."
        )
    if e_mouth.shape[-2] != len(mouth_indices):
        raise ValueError(
            f"e_mouth has {e_mouth.shape[-2]} keypoints but mouth_indices names {len(mouth_indices)}: "
            f"{list(mouth_indices)}."
        )
    num_kp = e_mouth.shape[-2] + e_rest.shape[-2]
    mouth, rest = _checked_indices(mouth_indices, num_kp)
    shape = (*e_mouth.shape[:-2], num_kp, 3)
    if isinstance(e_mouth, torch.Tensor):
        exp = e_mouth.new_empty(shape)
    else:
        exp = np.empty(shape, dtype=np.result_type(e_mouth, e_rest))
    exp[..., mouth, :] = e_mouth
    exp[..., rest, :] = e_rest
    return exp
