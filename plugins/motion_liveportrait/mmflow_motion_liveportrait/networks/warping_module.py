"""W: LivePortrait's warping module (dense motion → warped, occlusion-masked feature for the decoder G)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.utils import BaseOutput
from torch import nn

from .blocks import SameBlock2d
from .dense_motion import DenseMotionNetwork

# ``warping_module_params.dense_motion_params`` of the official models.yaml.
OFFICIAL_DENSE_MOTION_PARAMS = {
    "block_expansion": 32,
    "max_features": 1024,
    "num_blocks": 5,
    "reshape_depth": 16,
    "compress": 4,
}


@dataclass
class WarpingOutput(BaseOutput):
    """out: ``B×256×64×64`` warped feature (G's input). occlusion_map: ``B×1×64×64`` (None if disabled).
    deformation: ``B×D×64×64×3`` sampling grid applied to f_s."""

    out: torch.Tensor
    occlusion_map: torch.Tensor | None
    deformation: torch.Tensor


class WarpingNetwork(ModelMixin, ConfigMixin):
    """W: warp the source feature volume ``f_s`` from the source keypoints ``x_s`` to the driving ones ``x_d``.

    The constructor mirrors ``warping_module_params`` of ``models.yaml``; ``dense_motion_params=None`` means the
    official values. Parameter names equal the keys of ``base_models/warping_module.pth``.
    """

    @register_to_config
    def __init__(
        self,
        num_kp: int = 21,
        block_expansion: int = 64,
        max_features: int = 512,
        num_down_blocks: int = 2,
        reshape_channel: int = 32,
        estimate_occlusion_map: bool = True,
        dense_motion_params: dict | None = None,
        flag_use_occlusion_map: bool = True,
    ) -> None:
        super().__init__()
        if dense_motion_params is None:
            dense_motion_params = dict(OFFICIAL_DENSE_MOTION_PARAMS)
            self.register_to_config(dense_motion_params=dense_motion_params)  # record the values, not None
        expected = set(OFFICIAL_DENSE_MOTION_PARAMS)
        if set(dense_motion_params) != expected:
            raise ValueError(
                f"dense_motion_params must have exactly the keys {sorted(expected)}; got "
                f"{sorted(dense_motion_params)}."
            )
        self.dense_motion_network = DenseMotionNetwork(
            num_kp=num_kp,
            feature_channel=reshape_channel,
            estimate_occlusion_map=estimate_occlusion_map,
            **dense_motion_params,
        )
        width = block_expansion * 2**num_down_blocks  # 256 for the official model
        self.third = SameBlock2d(max_features, width, leaky=True)
        self.fourth = nn.Conv2d(width, width, kernel_size=1)

    def forward(
        self, feature_3d: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor
    ) -> WarpingOutput:
        """f_s ``B×32×16×64×64``, x_d and x_s ``B×21×3`` → :class:`WarpingOutput`."""
        dense = self.dense_motion_network(feature_3d, kp_driving=kp_driving, kp_source=kp_source)
        deformation = dense["deformation"]  # B×D×H×W×3
        warped = F.grid_sample(feature_3d, deformation, align_corners=False)  # B×C×D×H×W
        batch, channels, depth, height, width = warped.shape
        out = self.fourth(self.third(warped.view(batch, channels * depth, height, width)))  # B×256×H×W
        occlusion_map = dense.get("occlusion_map")
        if self.config.flag_use_occlusion_map and occlusion_map is not None:
            out = out * occlusion_map
        return WarpingOutput(out=out, occlusion_map=occlusion_map, deformation=deformation)
