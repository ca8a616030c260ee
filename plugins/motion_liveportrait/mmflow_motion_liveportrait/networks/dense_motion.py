"""The dense motion network inside W: keypoints → dense 3-D deformation field and occlusion map.

It is a plain ``nn.Module`` because it is stored inside W's checkpoint (``dense_motion_network.*``), not on its own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import DownBlock3d, UpBlock3d, make_coordinate_grid

# Variance of the Gaussian keypoint heatmaps, in the normalised [-1, 1] coordinate frame (official value).
HEATMAP_VARIANCE = 0.01


class HourglassEncoder(nn.Module):
    """``num_blocks`` DownBlock3d; returns the input and every block's output (the skip connections)."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int) -> None:
        super().__init__()
        widths = [in_features] + [
            min(max_features, block_expansion * 2 ** (i + 1)) for i in range(num_blocks)
        ]
        self.down_blocks = nn.ModuleList(DownBlock3d(widths[i], widths[i + 1]) for i in range(num_blocks))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = [x]
        for block in self.down_blocks:
            outs.append(block(outs[-1]))
        return outs


class HourglassDecoder(nn.Module):
    """UpBlock3d per level, each concatenated with the matching encoder output, then conv → BN → ReLU."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int) -> None:
        super().__init__()
        blocks = []
        for i in reversed(range(num_blocks)):
            width = min(max_features, block_expansion * 2 ** (i + 1))
            in_width = width if i == num_blocks - 1 else 2 * width  # deeper levels also carry the skip
            blocks.append(UpBlock3d(in_width, min(max_features, block_expansion * 2**i)))
        self.up_blocks = nn.ModuleList(blocks)
        self.out_filters = block_expansion + in_features
        self.conv = nn.Conv3d(self.out_filters, self.out_filters, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(self.out_filters)

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor:
        out = skips[-1]
        for block, skip in zip(self.up_blocks, reversed(skips[:-1]), strict=True):
            out = torch.cat([block(out), skip], dim=1)
        return F.relu(self.norm(self.conv(out)))


class Hourglass(nn.Module):
    """3-D U-Net-style hourglass; output has ``block_expansion + in_features`` channels at input resolution."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int) -> None:
        super().__init__()
        self.encoder = HourglassEncoder(block_expansion, in_features, num_blocks, max_features)
        self.decoder = HourglassDecoder(block_expansion, in_features, num_blocks, max_features)
        self.out_filters = self.decoder.out_filters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def keypoint_heatmaps(kp: torch.Tensor, spatial_size: tuple[int, int, int]) -> torch.Tensor:
    """``B×K×3`` keypoints → ``B×K×D×H×W`` unnormalised Gaussians centred on them."""
    grid = make_coordinate_grid(spatial_size, kp)  # D×H×W×3
    offset = grid[None, None] - kp[:, :, None, None, None, :]  # B×K×D×H×W×3
    return torch.exp(-0.5 * offset.pow(2).sum(-1) / HEATMAP_VARIANCE)


class DenseMotionNetwork(nn.Module):
    """Predict how to warp the source feature volume so its keypoints land on the driving keypoints.

    One candidate motion per keypoint (a pure translation, LivePortrait has no Jacobians) plus the identity
    for the background; a hourglass looks at the candidates and mixes them with a per-voxel softmax mask.
    """

    def __init__(
        self,
        block_expansion: int,
        num_blocks: int,
        max_features: int,
        num_kp: int,
        feature_channel: int,
        reshape_depth: int,
        compress: int,
        estimate_occlusion_map: bool = True,
    ) -> None:
        super().__init__()
        self.num_kp = num_kp
        self.hourglass = Hourglass(block_expansion, (num_kp + 1) * (compress + 1), num_blocks, max_features)
        self.mask = nn.Conv3d(self.hourglass.out_filters, num_kp + 1, kernel_size=7, padding=3)
        self.compress = nn.Conv3d(feature_channel, compress, kernel_size=1)
        self.norm = nn.BatchNorm3d(compress)
        self.occlusion = (
            nn.Conv2d(self.hourglass.out_filters * reshape_depth, 1, kernel_size=7, padding=3)
            if estimate_occlusion_map
            else None
        )

    def sparse_motions(self, spatial_size, kp_driving: torch.Tensor, kp_source: torch.Tensor) -> torch.Tensor:
        """Sampling grids ``B×(K+1)×D×H×W×3``: identity, then ``grid - kp_driving[k] + kp_source[k]``."""
        identity = make_coordinate_grid(spatial_size, kp_source)[None, None]  # 1×1×D×H×W×3
        shift = (kp_source - kp_driving)[:, :, None, None, None, :]  # B×K×1×1×1×3
        batch = kp_source.shape[0]
        return torch.cat([identity.expand(batch, -1, -1, -1, -1, -1), identity + shift], dim=1)

    def forward(self, feature: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor) -> dict:
        """feature ``B×C×D×H×W``; keypoints ``B×K×3`` → dict with ``mask``, ``deformation``, ``occlusion_map``."""
        batch, _, depth, height, width = feature.shape
        spatial_size = (depth, height, width)
        num_motions = self.num_kp + 1

        feature = F.relu(self.norm(self.compress(feature)))  # B×c×D×H×W (c = compress)
        motions = self.sparse_motions(spatial_size, kp_driving, kp_source)  # B×(K+1)×D×H×W×3

        # Warp the compressed feature once per candidate motion.
        repeated = feature.unsqueeze(1).expand(-1, num_motions, -1, -1, -1, -1).flatten(0, 1)
        deformed = F.grid_sample(repeated, motions.flatten(0, 1), align_corners=False)
        deformed = deformed.view(batch, num_motions, -1, depth, height, width)  # B×(K+1)×c×D×H×W

        heatmap = keypoint_heatmaps(kp_driving, spatial_size) - keypoint_heatmaps(kp_source, spatial_size)
        heatmap = torch.cat(
            [heatmap.new_zeros(batch, 1, depth, height, width), heatmap], dim=1
        )  # background 0

        hourglass_in = torch.cat([heatmap.unsqueeze(2), deformed], dim=2)  # B×(K+1)×(c+1)×D×H×W
        prediction = self.hourglass(hourglass_in.view(batch, -1, depth, height, width))

        mask = F.softmax(self.mask(prediction), dim=1)  # B×(K+1)×D×H×W
        deformation = (motions * mask.unsqueeze(-1)).sum(dim=1)  # B×D×H×W×3
        result = {"mask": mask, "deformation": deformation}
        if self.occlusion is not None:
            flat = prediction.view(batch, -1, height, width)  # depth folded into channels
            result["occlusion_map"] = torch.sigmoid(self.occlusion(flat))  # B×1×H×W
        return result
