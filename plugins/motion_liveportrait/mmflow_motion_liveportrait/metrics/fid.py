"""FID of generated videos against reference videos: pytorch-fid's protocol on frames sampled from each video.

Per video, frames are decoded as RGB (``fid.frames``: all of them by default, or N evenly spaced ones), scaled to
[0, 1] as torchvision's ``ToTensor`` does for pytorch-fid, and passed through ``FIDInceptionV3`` (299×299
bilinear resize, [-1, 1], 2048-d pool features). The generated frames of all samples form one set, the frames
of the distinct reference videos the other; FID is the Fréchet distance between them (np.cov covariances, as
``calculate_activation_statistics``).

Options: ``fid.weights`` (required: ``pt_inception-2015-12-05-6726825d.pth``), ``fid.frames`` (0 = every frame),
``fid.batch`` (frames per forward, 50 as pytorch-fid), ``fid.device``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from mmflow.evaluation.options import DEVICE_HELP, check_options, device_option, int_option

from ..video import read_video
from .evaluator_weights import file_digest, load_official_weights, weights_path
from .frechet import FrechetMetric
from .inception import FID_FEATURES, FID_INPUT_SIZE, FID_WEIGHTS_FILE, FIDInceptionV3

WEIGHTS_SOURCE = ("pytorch-fid's TF-ported Inception, https://github.com/mseitzer/pytorch-fid/releases/download/"
                  "fid_weights/" + FID_WEIGHTS_FILE)
OPTIONS = {
    "weights": f"the official {FID_WEIGHTS_FILE} (required)",
    "frames": "frames per video, evenly spaced (default 0: every frame)",
    "batch": "frames per forward pass (default 50, as pytorch-fid)",
    "device": DEVICE_HELP,
}


def sample_frames(total: int, count: int) -> np.ndarray:
    """Indices of ``count`` evenly spaced frames of ``total`` (first and last included); all when count is 0."""
    if count <= 0 or count >= total:
        return np.arange(total)
    return np.unique(np.round(np.linspace(0, total - 1, count)).astype(int))


class InceptionFeatures:
    """A video file → ``N×2048`` Inception pool features of its sampled frames."""

    def __init__(self, model: FIDInceptionV3, frames: int, batch: int, device: torch.device) -> None:
        self.model, self.frames, self.batch, self.device = model.to(device), frames, batch, device

    @torch.no_grad()
    def images(self, images: np.ndarray) -> np.ndarray:
        """``N×H×W×3`` uint8 RGB images → ``N×2048`` float32 features."""
        out = np.empty((len(images), FID_FEATURES), dtype=np.float32)
        for start in range(0, len(images), self.batch):
            chunk = torch.from_numpy(images[start:start + self.batch]).to(self.device)
            chunk = chunk.permute(0, 3, 1, 2).float() / 255
            out[start:start + len(chunk)] = self.model(chunk).cpu().numpy()
        return out

    def __call__(self, path: Path) -> np.ndarray:
        frames = read_video(path, read_audio=False).frames
        return self.images(frames[sample_frames(len(frames), self.frames)])


def fid_metric(options: Mapping[str, str], workdir: Path) -> FrechetMetric:
    """The ``fid`` metric factory (``mmflow_metrics``)."""
    options = check_options("metric", "fid", options, OPTIONS)
    path = weights_path(options, FID_WEIGHTS_FILE, WEIGHTS_SOURCE)
    frames = int_option(options, "frames", 0, minimum=0)
    batch = int_option(options, "batch", 50, minimum=1)
    device = device_option(options)
    model = load_official_weights(lambda: FIDInceptionV3(input_size=FID_INPUT_SIZE), path, "pytorch-fid Inception")
    protocol = f"fid pytorch-fid inception {file_digest(path)} frames={frames}"
    return FrechetMetric("fid", Path(workdir), InceptionFeatures(model, frames, batch, device), protocol)
