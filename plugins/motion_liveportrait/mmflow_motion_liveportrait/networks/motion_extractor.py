"""M: LivePortrait's motion extractor, a ConvNeXt-V2 backbone with seven linear heads.

It predicts, from one ``B×3×256×256`` image in ``[0, 1]``, the canonical keypoints and the head pose / expression
/ translation / scale. The heads are returned raw (pose as bin logits); ``keypoints.py`` turns them into the
keypoint representation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.utils import BaseOutput
from torch import nn

# Backbone name (the ``backbone`` entry of models.yaml) → (blocks per stage, channels per stage).
CONVNEXTV2_VARIANTS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "convnextv2_tiny": ((3, 3, 9, 3), (96, 192, 384, 768)),
}


class ChannelsFirstLayerNorm(nn.Module):
    """LayerNorm over the channel axis of a ``B×C×H×W`` tensor (ConvNeXt's stem/downsampling norm)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.weight.shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class GlobalResponseNorm(nn.Module):
    """ConvNeXt-V2's GRN on channels-last input: rescale each channel by its spatial L2 norm over the mean norm.

    The parameters are stored as ``1×1×1×C`` (official layout) and start at zero, i.e. as the identity.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, channels))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: B×H×W×C
        spatial_norm = torch.linalg.vector_norm(x, dim=(1, 2), keepdim=True)  # B×1×1×C
        relative = spatial_norm / (spatial_norm.mean(dim=-1, keepdim=True) + 1e-6)
        return self.gamma * (x * relative) + self.beta + x


class ConvNeXtV2Block(nn.Module):
    """Depthwise 7×7 conv → LayerNorm → MLP (4× expansion, GELU, GRN) with a residual connection."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.grn = GlobalResponseNorm(4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: B×C×H×W
        out = self.dwconv(x).permute(0, 2, 3, 1)  # B×H×W×C
        out = self.pwconv2(self.grn(F.gelu(self.pwconv1(self.norm(out)))))
        return x + out.permute(0, 3, 1, 2)


class ConvNeXtV2Detector(nn.Module):
    """The ``detector`` sub-module: ConvNeXt-V2 trunk, global average pool, LayerNorm and the heads."""

    def __init__(
        self, depths: tuple[int, ...], dims: tuple[int, ...], num_kp: int, num_bins: int, in_chans: int = 3
    ) -> None:
        super().__init__()
        stem = nn.Sequential(
            nn.Conv2d(in_chans, dims[0], kernel_size=4, stride=4), ChannelsFirstLayerNorm(dims[0])
        )
        downsamplers = [
            nn.Sequential(
                ChannelsFirstLayerNorm(dims[i]), nn.Conv2d(dims[i], dims[i + 1], kernel_size=2, stride=2)
            )
            for i in range(len(dims) - 1)
        ]
        self.downsample_layers = nn.ModuleList([stem, *downsamplers])
        self.stages = nn.ModuleList(
            nn.Sequential(*(ConvNeXtV2Block(dim) for _ in range(depth)))
            for depth, dim in zip(depths, dims, strict=True)
        )
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        width = dims[-1]
        self.fc_kp = nn.Linear(width, 3 * num_kp)
        self.fc_scale = nn.Linear(width, 1)
        self.fc_pitch = nn.Linear(width, num_bins)
        self.fc_yaw = nn.Linear(width, num_bins)
        self.fc_roll = nn.Linear(width, num_bins)
        self.fc_t = nn.Linear(width, 3)
        self.fc_exp = nn.Linear(width, 3 * num_kp)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``B×3×H×W`` → pooled, normalised feature ``B×C`` (C=768 for the tiny backbone)."""
        for downsample, stage in zip(self.downsample_layers, self.stages, strict=True):
            x = stage(downsample(x))
        return self.norm(x.mean(dim=(-2, -1)))


@dataclass
class MotionExtractorOutput(BaseOutput):
    """Raw head outputs of M (also readable as a dict, like the official return value).

    pitch, yaw, roll: ``B×num_bins`` pose-bin logits (66 bins of 3°).
    t: ``B×3`` translation. exp: ``B×3K`` expression offsets. scale: ``B×1``. kp: ``B×3K`` canonical keypoints.
    """

    pitch: torch.Tensor
    yaw: torch.Tensor
    roll: torch.Tensor
    t: torch.Tensor
    exp: torch.Tensor
    scale: torch.Tensor
    kp: torch.Tensor


class MotionExtractor(ModelMixin, ConfigMixin):
    """M: implicit-keypoint and pose detector.

    The constructor mirrors ``motion_extractor_params`` of ``models.yaml`` (``num_kp``, ``backbone``) plus
    ``num_bins``, which the official code fixes at 66. Parameter names equal the keys of
    ``base_models/motion_extractor.pth`` (``detector.*``).
    """

    @register_to_config
    def __init__(self, num_kp: int = 21, backbone: str = "convnextv2_tiny", num_bins: int = 66) -> None:
        super().__init__()
        if backbone not in CONVNEXTV2_VARIANTS:
            raise ValueError(
                f"Unknown motion-extractor backbone {backbone!r}; LivePortrait uses one of "
                f"{sorted(CONVNEXTV2_VARIANTS)}."
            )
        depths, dims = CONVNEXTV2_VARIANTS[backbone]
        self.detector = ConvNeXtV2Detector(depths, dims, num_kp=num_kp, num_bins=num_bins)

    def forward(self, image: torch.Tensor) -> MotionExtractorOutput:
        """``B×3×256×256`` RGB in ``[0, 1]`` → raw head outputs (see :class:`MotionExtractorOutput`)."""
        feature = self.detector(image)  # B×768
        head = self.detector
        return MotionExtractorOutput(
            pitch=head.fc_pitch(feature),
            yaw=head.fc_yaw(feature),
            roll=head.fc_roll(feature),
            t=head.fc_t(feature),
            exp=head.fc_exp(feature),
            scale=head.fc_scale(feature),
            kp=head.fc_kp(feature),
        )
