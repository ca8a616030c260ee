"""S, R_lip, R_eyes: LivePortrait's stitching and retargeting MLPs (one class, three official sizes)."""

from __future__ import annotations

import torch
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config
from torch import nn

# ``stitching_retargeting_module_params`` of the official models.yaml.
#   stitching: x_s (63) ‖ x_d (63) → Δ keypoints (63) + Δ(tx, ty)
#   lip:       x_s (63) ‖ [c_s_lip, c_d_lip] → Δ keypoints (63)
#   eye:       x_s (63) ‖ [c_s_eyeL, c_s_eyeR, c_d_eye] → Δ keypoints (63)
OFFICIAL_MLP_CONFIGS: dict[str, dict] = {
    "stitching": {"input_size": 126, "hidden_sizes": (128, 128, 64), "output_size": 65},
    "lip": {"input_size": 65, "hidden_sizes": (128, 128, 64), "output_size": 63},
    "eye": {"input_size": 66, "hidden_sizes": (256, 256, 128, 128, 64), "output_size": 63},
}


class StitchingRetargetingNetwork(ModelMixin, ConfigMixin):
    """A ReLU MLP; parameter names ``mlp.{0,2,4,...}.*`` equal the official inner keys.

    Defaults are the stitching network S; use :meth:`from_official_config` for ``"lip"`` and ``"eye"``.
    These networks run in fp32 in LivePortrait (outside fp16 autocast).
    """

    @register_to_config
    def __init__(
        self,
        input_size: int = 126,
        hidden_sizes: tuple[int, ...] = (128, 128, 64),
        output_size: int = 65,
    ) -> None:
        super().__init__()
        if len(hidden_sizes) == 0:
            raise ValueError(
                "hidden_sizes must name at least one hidden layer width (official S: [128, 128, 64])."
            )
        widths = [input_size, *hidden_sizes]
        layers: list[nn.Module] = []
        for fan_in, fan_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
        layers.append(nn.Linear(widths[-1], output_size))
        self.mlp = nn.Sequential(*layers)

    @classmethod
    def from_official_config(cls, kind: str) -> StitchingRetargetingNetwork:
        """Build the full-size ``"stitching"``, ``"lip"`` or ``"eye"`` network (random weights)."""
        if kind not in OFFICIAL_MLP_CONFIGS:
            raise ValueError(
                f"Unknown stitching/retargeting kind {kind!r}; choose one of {sorted(OFFICIAL_MLP_CONFIGS)}."
            )
        return cls(**OFFICIAL_MLP_CONFIGS[kind])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``B×input_size`` → ``B×output_size``."""
        return self.mlp(x)
