"""G: LivePortrait's SPADE decoder (warped feature → RGB image at twice the feature resolution × 4)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config
from torch import nn

from .spectral_norm import SpectralNormConv2d

# Hidden width of every SPADE modulation MLP (fixed in LivePortrait, not in models.yaml).
SPADE_HIDDEN = 128


class SPADE(nn.Module):
    """Spatially adaptive normalisation: ``instance_norm(x) · (1 + γ(seg)) + β(seg)``.

    The segmentation map (here: W's output) is resized to ``x`` with nearest interpolation.
    """

    def __init__(self, norm_channels: int, label_channels: int) -> None:
        super().__init__()
        self.param_free_norm = nn.InstanceNorm2d(norm_channels, affine=False)
        self.mlp_shared = nn.Sequential(
            nn.Conv2d(label_channels, SPADE_HIDDEN, kernel_size=3, padding=1), nn.ReLU()
        )
        self.mlp_gamma = nn.Conv2d(SPADE_HIDDEN, norm_channels, kernel_size=3, padding=1)
        self.mlp_beta = nn.Conv2d(SPADE_HIDDEN, norm_channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        segmap = F.interpolate(segmap, size=x.shape[2:], mode="nearest")
        hidden = self.mlp_shared(segmap)
        return self.param_free_norm(x) * (1 + self.mlp_gamma(hidden)) + self.mlp_beta(hidden)


class SPADEResnetBlock(nn.Module):
    """Residual block with SPADE norms; a 1×1 shortcut conv (no bias) when the width changes.

    The convs were spectrally normalised during training; we keep the folded weights (see ``spectral_norm.py``).
    """

    def __init__(self, fin: int, fout: int, label_channels: int) -> None:
        super().__init__()
        fmiddle = min(fin, fout)
        self.learned_shortcut = fin != fout
        self.conv_0 = SpectralNormConv2d(fin, fmiddle, kernel_size=3, padding=1)
        self.conv_1 = SpectralNormConv2d(fmiddle, fout, kernel_size=3, padding=1)
        self.norm_0 = SPADE(fin, label_channels)
        self.norm_1 = SPADE(fmiddle, label_channels)
        if self.learned_shortcut:
            self.conv_s = SpectralNormConv2d(fin, fout, kernel_size=1, bias=False)
            self.norm_s = SPADE(fin, label_channels)

    def forward(self, x: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        shortcut = self.conv_s(self.norm_s(x, segmap)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, segmap), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, segmap), 0.2))
        return shortcut + dx


class SPADEDecoder(ModelMixin, ConfigMixin):
    """G: decode W's ``B×256×64×64`` output into a ``B×3×512×512`` image in ``[0, 1]``.

    The constructor mirrors ``spade_generator_params`` of ``models.yaml`` (defaults = official full size, 55.4 M
    parameters) plus ``out_channels``, which the official code fixes at 64. ``upscale`` > 1 ends with a
    pixel shuffle by that factor (official: 2, i.e. 256² → 512²); 1 ends with a plain RGB conv. Parameter names
    equal the keys of ``base_models/spade_generator.pth`` once its legacy spectral-norm entries are folded;
    ``load_state_dict`` accepts the official file directly.
    """

    @register_to_config
    def __init__(
        self,
        upscale: int = 2,
        block_expansion: int = 64,
        max_features: int = 512,
        num_down_blocks: int = 2,
        out_channels: int = 64,
    ) -> None:
        super().__init__()
        if upscale is None or upscale < 1:
            raise ValueError(f"upscale must be an integer >= 1 (official: 2); got {upscale!r}.")
        in_channels = min(max_features, block_expansion * 2**num_down_blocks)  # W's output width: 256
        width = 2 * in_channels  # 512
        self.fc = nn.Conv2d(in_channels, width, kernel_size=3, padding=1)
        for i in range(6):
            setattr(self, f"G_middle_{i}", SPADEResnetBlock(width, width, in_channels))
        self.up_0 = SPADEResnetBlock(width, in_channels, in_channels)
        self.up_1 = SPADEResnetBlock(in_channels, out_channels, in_channels)
        if upscale == 1:
            self.conv_img = nn.Conv2d(out_channels, 3, kernel_size=3, padding=1)
        else:
            self.conv_img = nn.Sequential(
                nn.Conv2d(out_channels, 3 * upscale**2, kernel_size=3, padding=1),
                nn.PixelShuffle(upscale),
            )

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        """W output ``B×256×64×64`` → image ``B×3×(256·upscale)×(256·upscale)`` in ``[0, 1]``."""
        segmap = feature
        x = self.fc(feature)  # B×512×64×64
        for i in range(6):
            x = getattr(self, f"G_middle_{i}")(x, segmap)
        x = self.up_0(F.interpolate(x, scale_factor=2), segmap)  # B×256×128×128
        x = self.up_1(F.interpolate(x, scale_factor=2), segmap)  # B×64×256×256
        x = self.conv_img(F.leaky_relu(x, 0.2))  # B×3×512×512
        return torch.sigmoid(x)
