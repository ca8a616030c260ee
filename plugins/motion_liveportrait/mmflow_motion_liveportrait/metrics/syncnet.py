"""SyncNet "v2" (Chung & Zisserman 2016, as released in joonson/syncnet_python) and its official weights file.

The module tree and parameter names are those of ``SyncNetModel.S`` (joonson/syncnet_python, commit 6efbb1c3):
``netcnnaud`` (2-D convs over a 13×20 MFCC window), ``netfcaud``, ``netcnnlip`` (3-D convs over 5 frames of a
224×224 BGR face crop, pixel values 0-255) and ``netfclip``, each an ``nn.Sequential`` whose indices give the key
names (``netcnnaud.0.weight``, ``netcnnlip.1.running_mean``, ...). ``syncnet_v2.model`` is a state dict of that
module saved with ``torch.save``; the reference copies every key into ``S().state_dict()``. It is read with
``torch.load(weights_only=True)`` (tensors only, no code), checked key by key and loaded unchanged by
:func:`~.evaluator_weights.load_official_weights`, as the other evaluator networks are.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from mmflow.codecs import InputError

from .evaluator_weights import load_official_weights

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "syncnet_v2.model"
WEIGHTS_URL = "http://www.robots.ox.ac.uk/~vgg/software/lipsync/data/syncnet_v2.model"
EMBEDDING = 1024


def _conv_bn_relu(conv: nn.Module, channels: int, batch_norm) -> list[nn.Module]:
    return [conv, batch_norm(channels), nn.ReLU(inplace=True)]


class SyncNetV2(nn.Module):
    """The audio and lip towers; ``forward_aud``: ``N×1×13×20`` MFCCs, ``forward_lip``: ``N×3×5×224×224`` BGR."""

    def __init__(self, embedding: int = EMBEDDING) -> None:
        super().__init__()
        bn2, bn3 = nn.BatchNorm2d, nn.BatchNorm3d
        self.netcnnaud = nn.Sequential(
            *_conv_bn_relu(nn.Conv2d(1, 64, 3, padding=1), 64, bn2),
            nn.MaxPool2d(1, 1),
            *_conv_bn_relu(nn.Conv2d(64, 192, 3, padding=1), 192, bn2),
            nn.MaxPool2d(3, (1, 2)),
            *_conv_bn_relu(nn.Conv2d(192, 384, 3, padding=1), 384, bn2),
            *_conv_bn_relu(nn.Conv2d(384, 256, 3, padding=1), 256, bn2),
            *_conv_bn_relu(nn.Conv2d(256, 256, 3, padding=1), 256, bn2),
            nn.MaxPool2d(3, 2),
            *_conv_bn_relu(nn.Conv2d(256, 512, (5, 4)), 512, bn2),
        )
        self.netfcaud = self._head(embedding)
        self.netfclip = self._head(embedding)
        self.netcnnlip = nn.Sequential(
            *_conv_bn_relu(nn.Conv3d(3, 96, (5, 7, 7), stride=(1, 2, 2)), 96, bn3),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            *_conv_bn_relu(nn.Conv3d(96, 256, (1, 5, 5), stride=(1, 2, 2), padding=(0, 1, 1)), 256, bn3),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2), padding=(0, 1, 1)),
            *_conv_bn_relu(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, bn3),
            *_conv_bn_relu(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, bn3),
            *_conv_bn_relu(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, bn3),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            *_conv_bn_relu(nn.Conv3d(256, 512, (1, 6, 6)), 512, bn3),
        )

    @staticmethod
    def _head(embedding: int) -> nn.Sequential:
        return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embedding))

    def forward_aud(self, mfcc: torch.Tensor) -> torch.Tensor:
        return self.netfcaud(self.netcnnaud(mfcc).flatten(1))

    def forward_lip(self, frames: torch.Tensor) -> torch.Tensor:
        return self.netfclip(self.netcnnlip(frames).flatten(1))


def load_syncnet(path: str | Path) -> SyncNetV2:
    """The official ``syncnet_v2.model`` (or a file in its layout) in eval mode; every tensor key must match
    (:func:`~.evaluator_weights.load_official_weights`)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"SyncNet weights {str(path)!r} do not exist; pass the official {WEIGHTS_FILE} "
                         f"(from {WEIGHTS_URL}) with --metric-option lse.weights=/path/to/{WEIGHTS_FILE}.")
    model = load_official_weights(SyncNetV2, path, f"SyncNet v2 ({WEIGHTS_FILE} from {WEIGHTS_URL})")
    logger.info("loaded SyncNet v2 weights from %s", path)
    return model
