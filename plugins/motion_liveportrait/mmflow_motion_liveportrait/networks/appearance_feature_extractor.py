"""F: LivePortrait's appearance feature extractor (source image → 3-D appearance feature volume f_s)."""

from __future__ import annotations

from collections import OrderedDict

import torch
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config
from torch import nn

from .blocks import DownBlock2d, ResBlock3d, SameBlock2d


class AppearanceFeatureExtractor(ModelMixin, ConfigMixin):
    """Map an RGB image in ``[0, 1]`` to the feature volume that W warps.

    The constructor arguments are the ``appearance_feature_extractor_params`` of LivePortrait's
    ``models.yaml``; the defaults are the official full-size values (0.84 M parameters). Parameter names equal
    the keys of ``base_models/appearance_feature_extractor.pth``.
    """

    @register_to_config
    def __init__(
        self,
        image_channel: int = 3,
        block_expansion: int = 64,
        num_down_blocks: int = 2,
        max_features: int = 512,
        reshape_channel: int = 32,
        reshape_depth: int = 16,
        num_resblocks: int = 6,
    ) -> None:
        super().__init__()
        if reshape_channel * reshape_depth != max_features:
            raise ValueError(
                f"reshape_channel × reshape_depth must equal max_features so the 2-D feature can be reshaped to "
                f"3-D; got {reshape_channel} × {reshape_depth} != {max_features}."
            )
        self.first = SameBlock2d(image_channel, block_expansion)
        widths = [min(max_features, block_expansion * 2**i) for i in range(num_down_blocks + 1)]
        self.down_blocks = nn.ModuleList(
            DownBlock2d(widths[i], widths[i + 1]) for i in range(num_down_blocks)
        )
        self.second = nn.Conv2d(widths[-1], max_features, kernel_size=1)
        # The official key names are "resblocks_3d.3dr{i}.*", hence the explicit child names.
        self.resblocks_3d = nn.Sequential(
            OrderedDict((f"3dr{i}", ResBlock3d(reshape_channel)) for i in range(num_resblocks))
        )

    def forward(self, source_image: torch.Tensor) -> torch.Tensor:
        """``B×3×256×256`` image → ``f_s`` of shape ``B×C×D×64×64`` (official: C=32, D=16)."""
        out = self.first(source_image)  # B×64×256×256
        for block in self.down_blocks:
            out = block(out)  # → B×128×128×128 → B×256×64×64
        out = self.second(out)  # B×512×64×64
        batch, _, height, width = out.shape
        f_s = out.view(batch, self.config.reshape_channel, self.config.reshape_depth, height, width)
        return self.resblocks_3d(f_s)  # B×32×16×64×64
