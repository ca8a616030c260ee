"""Convolution blocks shared by LivePortrait's F and W networks.

Attribute names (``conv``, ``norm``, ``conv1`` ...) are part of the official state-dict keys, so they must not
be renamed. All blocks keep LivePortrait's order of operations (conv → BatchNorm → activation → pooling).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def make_coordinate_grid(spatial_size: tuple[int, int, int], like: torch.Tensor) -> torch.Tensor:
    """Return the ``D×H×W×3`` grid of normalised ``(x, y, z)`` coordinates in ``[-1, 1]``.

    LivePortrait's keypoints live in this frame: x to the right, y down, z into the screen, with the last axis
    ordered ``(x, y, z)`` as ``grid_sample`` expects. ``like`` fixes dtype and device.
    """
    depth, height, width = spatial_size

    def axis(n: int) -> torch.Tensor:
        return 2.0 * torch.arange(n, dtype=like.dtype, device=like.device) / (n - 1) - 1.0

    z, y, x = torch.meshgrid(axis(depth), axis(height), axis(width), indexing="ij")  # each D×H×W
    return torch.stack([x, y, z], dim=-1)  # D×H×W×3


class SameBlock2d(nn.Module):
    """Resolution-preserving conv → BN → ReLU (or LeakyReLU for W's ``third`` block)."""

    def __init__(self, in_features: int, out_features: int, leaky: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm2d(out_features)
        self.leaky = leaky

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.norm(self.conv(x))
        return F.leaky_relu(out) if self.leaky else F.relu(out)


class DownBlock2d(nn.Module):
    """conv → BN → ReLU → 2×2 average pooling (halves H and W)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm2d(out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(F.relu(self.norm(self.conv(x))), kernel_size=2)


class ResBlock3d(nn.Module):
    """Pre-activation 3-D residual block: ``x + conv2(relu(bn2(conv1(relu(bn1(x))))))``."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(features, features, kernel_size=3, padding=1)
        self.conv2 = nn.Conv3d(features, features, kernel_size=3, padding=1)
        self.norm1 = nn.BatchNorm3d(features)
        self.norm2 = nn.BatchNorm3d(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.norm1(x)))
        out = self.conv2(F.relu(self.norm2(out)))
        return x + out


class DownBlock3d(nn.Module):
    """3-D conv → BN → ReLU → average pooling over H and W only (the depth axis is kept)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_features, out_features, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool3d(F.relu(self.norm(self.conv(x))), kernel_size=(1, 2, 2))


class UpBlock3d(nn.Module):
    """Nearest 2× upsampling over H and W, then 3-D conv → BN → ReLU."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_features, out_features, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=(1, 2, 2))
        return F.relu(self.norm(self.conv(x)))
