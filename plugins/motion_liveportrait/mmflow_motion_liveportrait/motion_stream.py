"""The motion stream as the flow sees it: normalised e_mouth generated, normalised e_rest given per frame.

JAM-Flow's Motion-DiT (paper §4.2) generates only the mouth part of LivePortrait's expression; the other
keypoints come in as a per-frame condition. Raw expression offsets are small (|exp| ≲ 0.05) and uneven across
keypoints, so each dimension is standardised with statistics measured on training data and stored with the
model (``MotionNormalizer``, a diffusers component, saved as safetensors + config).

Shape letters: ``b`` batch, ``T`` frames, ``M`` mouth keypoints, ``R`` other keypoints.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from diffusers import ModelMixin  # noqa: F401  (diffusers looks this name up in the component's module)
from diffusers.configuration_utils import ConfigMixin, register_to_config

from .keypoints import MOUTH_KEYPOINT_INDICES, NUM_KEYPOINTS, merge_expression, split_expression
from .plugin import MOTION


class MotionNormalizer(ModelMixin, ConfigMixin):
    """Per-dimension standardisation of e_mouth and e_rest, with the mouth index set it was measured for.

    Args:
        mouth_indices: The expression keypoints that form e_mouth (default: LivePortrait's 4 mouth keypoints).
        num_keypoints: Keypoints in the expression (21 for LivePortrait).
        min_std: Floor on the stored standard deviations, so keypoints that never move are not blown up.
    """

    @register_to_config
    def __init__(
        self,
        mouth_indices: Sequence[int] = MOUTH_KEYPOINT_INDICES,
        num_keypoints: int = NUM_KEYPOINTS,
        min_std: float = 1e-4,
    ):
        super().__init__()
        mouth = len(mouth_indices) * 3
        rest = (num_keypoints - len(mouth_indices)) * 3
        self.register_buffer("mouth_mean", torch.zeros(mouth))
        self.register_buffer("mouth_std", torch.ones(mouth))
        self.register_buffer("rest_mean", torch.zeros(rest))
        self.register_buffer("rest_std", torch.ones(rest))

    @property
    def mouth_channels(self) -> int:
        return self.mouth_mean.numel()

    @property
    def rest_channels(self) -> int:
        return self.rest_mean.numel()

    @torch.no_grad()
    def fit(self, expressions: Sequence[torch.Tensor]) -> MotionNormalizer:
        """Measure the statistics on expression sequences, each ``(T, K, 3)``."""
        if not expressions:
            raise ValueError("fit() needs at least one expression sequence of shape (T, 21, 3)")
        frames = torch.cat([torch.as_tensor(e, dtype=torch.float32).reshape(-1, *e.shape[-2:]) for e in expressions])
        mouth, rest = self._split(frames)
        floor = self.config.min_std
        self.mouth_mean.copy_(mouth.mean(0))
        self.mouth_std.copy_(mouth.std(0, unbiased=False).clamp(min=floor))
        self.rest_mean.copy_(rest.mean(0))
        self.rest_std.copy_(rest.std(0, unbiased=False).clamp(min=floor))
        return self

    def _split(self, exp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if exp.shape[-2:] != (self.config.num_keypoints, 3):
            raise ValueError(
                f"expression must be (..., {self.config.num_keypoints}, 3), got {tuple(exp.shape)}; pass "
                f"LivePortrait's `exp` reshaped to keypoints × xyz"
            )
        mouth, rest = split_expression(exp, self.config.mouth_indices)
        return mouth.flatten(-2), rest.flatten(-2)

    def normalize(self, exp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Expression ``(..., K, 3)`` → stream latent e_mouth ``(..., 3M)`` and condition e_rest ``(..., 3R)``."""
        mouth, rest = self._split(exp.to(self.mouth_mean.dtype))
        return (mouth - self.mouth_mean) / self.mouth_std, (rest - self.rest_mean) / self.rest_std

    def denormalize(self, mouth: torch.Tensor, rest: torch.Tensor) -> torch.Tensor:
        """Inverse of ``normalize``: back to the full expression ``(..., K, 3)``."""
        e_mouth = (mouth * self.mouth_std + self.mouth_mean).unflatten(-1, (-1, 3))
        e_rest = (rest * self.rest_std + self.rest_mean).unflatten(-1, (-1, 3))
        return merge_expression(e_mouth, e_rest, self.config.mouth_indices)


def motion_stream_config(
    dim: int = 512,
    depth: int = 22,
    heads: int = 16,
    dim_head: int = 64,
    ff_mult: float = 2,
    mouth_indices: Sequence[int] = MOUTH_KEYPOINT_INDICES,
    num_keypoints: int = NUM_KEYPOINTS,
    position: str = "scaled",
) -> dict:
    """The ``motion`` entry of an ``MMDiT`` streams config: a DiT whose heads match the audio stream's.

    Width may be smaller than the audio stream's (1024 in F5-TTS Base); heads × dim_head must equal the audio
    stream's for joint attention, and the depth is the audio depth so every layer has a partner (paper §4.2).
    """
    mouth = len(mouth_indices) * 3
    return {
        "frame_rate": f"{MOTION.frame_rate.numerator}/{MOTION.frame_rate.denominator}",
        "channels": mouth,
        "cond_channels": (num_keypoints - len(mouth_indices)) * 3,
        "position": position,
        "backbone": "dit",
        "backbone_config": {"dim": dim, "depth": depth, "heads": heads, "dim_head": dim_head, "ff_mult": ff_mult},
    }
