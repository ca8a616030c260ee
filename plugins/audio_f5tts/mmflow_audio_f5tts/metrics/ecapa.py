"""The ECAPA-TDNN speaker-embedding head of UniSpeech's WavLM speaker verifier, which F5-TTS's SIM-o uses.

Architecture as in F5-TTS 1.1.22 ``f5_tts/eval/ecapa_tdnn.py`` (from microsoft/UniSpeech
``downstreams/speaker_verification/models/ecapa_tdnn.py``): the WavLM hidden states are mixed with softmax
weights (``feature_weight``), instance-normalised, then three SE-Res2 blocks, multi-layer aggregation, attentive
statistics pooling and a linear embedding. Attribute names are the checkpoint's keys (``layer2.SE_Connect...``),
so the official ``wavlm_large_finetune.pth`` loads without renaming; sizes are read from its weights.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn


class ConvReluBn(nn.Module):
    """Conv1d, ReLU, BatchNorm1d (in that order, as trained)."""

    def __init__(self, channels_in: int, channels_out: int, kernel_size: int = 1, padding: int = 0) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels_in, channels_out, kernel_size, padding=padding)
        self.bn = nn.BatchNorm1d(channels_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(F.relu(self.conv(x)))


class Res2ConvReluBn(nn.Module):
    """Res2Net block: the channels in ``scale`` groups, each group's conv also fed the previous group's output;
    the last group passes through."""

    def __init__(self, channels: int, kernel_size: int, padding: int, dilation: int, scale: int) -> None:
        super().__init__()
        if channels % scale:
            raise ValueError(f"Res2ConvReluBn: channels {channels} must divide into scale {scale} groups")
        self.width = channels // scale
        self.convs = nn.ModuleList(nn.Conv1d(self.width, self.width, kernel_size, padding=padding, dilation=dilation)
                                   for _ in range(scale - 1))
        self.bns = nn.ModuleList(nn.BatchNorm1d(self.width) for _ in range(scale - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups = torch.split(x, self.width, dim=1)
        outputs, carried = [], None
        for group, conv, bn in zip(groups, self.convs, self.bns, strict=False):  # the last group passes through
            carried = group if carried is None else carried + group
            carried = bn(F.relu(conv(carried)))
            outputs.append(carried)
        outputs.append(groups[len(self.convs)])
        return torch.cat(outputs, dim=1)


class SqueezeExcite(nn.Module):
    """Channel gates from the time-averaged features."""

    def __init__(self, channels: int, bottleneck: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(channels, bottleneck)
        self.linear2 = nn.Linear(bottleneck, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gates = torch.sigmoid(self.linear2(F.relu(self.linear1(x.mean(dim=2)))))
        return x * gates.unsqueeze(2)


class SERes2Block(nn.Module):
    """1x1 conv, dilated Res2 conv, 1x1 conv, squeeze-excite, plus the input (channels in == out here)."""

    def __init__(self, channels: int, dilation: int, bottleneck: int, scale: int = 8) -> None:
        super().__init__()
        self.Conv1dReluBn1 = ConvReluBn(channels, channels)
        self.Res2Conv1dReluBn = Res2ConvReluBn(channels, 3, padding=dilation, dilation=dilation, scale=scale)
        self.Conv1dReluBn2 = ConvReluBn(channels, channels)
        self.SE_Connect = SqueezeExcite(channels, bottleneck)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.SE_Connect(self.Conv1dReluBn2(self.Res2Conv1dReluBn(self.Conv1dReluBn1(x))))


class AttentiveStatsPool(nn.Module):
    """Per-channel attention over time; the weighted mean and standard deviation, concatenated."""

    def __init__(self, channels: int, attention: int) -> None:
        super().__init__()
        self.linear1 = nn.Conv1d(channels, attention, kernel_size=1)
        self.linear2 = nn.Conv1d(attention, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = torch.softmax(self.linear2(torch.tanh(self.linear1(x))), dim=2)
        mean = (alpha * x).sum(dim=2)
        variance = (alpha * x * x).sum(dim=2) - mean * mean
        return torch.cat([mean, variance.clamp(min=1e-9).sqrt()], dim=1)


class EcapaHead(nn.Module):
    """Hidden states ``(layers, batch, frames, features)`` of the speech model -> ``(batch, emb_dim)`` embedding."""

    def __init__(self, num_hidden: int, feat_dim: int, channels: int = 512, joined: int = 1536,
                 attention: int = 128, bottleneck: int = 128, emb_dim: int = 256) -> None:
        super().__init__()
        self.feature_weight = nn.Parameter(torch.zeros(num_hidden))
        self.instance_norm = nn.InstanceNorm1d(feat_dim)
        self.layer1 = ConvReluBn(feat_dim, channels, kernel_size=5, padding=2)
        self.layer2 = SERes2Block(channels, dilation=2, bottleneck=bottleneck)
        self.layer3 = SERes2Block(channels, dilation=3, bottleneck=bottleneck)
        self.layer4 = SERes2Block(channels, dilation=4, bottleneck=bottleneck)
        self.conv = nn.Conv1d(channels * 3, joined, kernel_size=1)
        self.pooling = AttentiveStatsPool(joined, attention)
        self.bn = nn.BatchNorm1d(joined * 2)
        self.linear = nn.Linear(joined * 2, emb_dim)

    @classmethod
    def sized_like(cls, weights: Mapping[str, torch.Tensor]) -> EcapaHead:
        """A head with the sizes of a checkpoint's weights (keys without the ``feature_extract.`` part)."""
        return cls(num_hidden=weights["feature_weight"].shape[0], feat_dim=weights["layer1.conv.weight"].shape[1],
                   channels=weights["layer1.conv.weight"].shape[0], joined=weights["conv.weight"].shape[0],
                   attention=weights["pooling.linear1.weight"].shape[0],
                   bottleneck=weights["layer2.SE_Connect.linear1.weight"].shape[0],
                   emb_dim=weights["linear.weight"].shape[0])

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        mix = torch.softmax(self.feature_weight, dim=-1)[:, None, None, None]
        x = self.instance_norm((mix * hidden).sum(dim=0).transpose(1, 2) + 1e-6)
        out2 = self.layer2(self.layer1(x))
        out3 = self.layer3(out2)
        out4 = self.layer4(out3)
        joined = F.relu(self.conv(torch.cat([out2, out3, out4], dim=1)))
        return self.linear(self.bn(self.pooling(joined)))
