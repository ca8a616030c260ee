"""The one place tests import the reference LivePortrait networks (mimic-head, the original module code).

Importing this module skips the calling test module when mimic-head is not installed.
"""

from __future__ import annotations

import copy
import importlib.resources

import pytest
import torch
import yaml

pytest.importorskip("mimic_head")

from mimic_head.modules.appearance_feature_extractor import AppearanceFeatureExtractor  # noqa: E402
from mimic_head.modules.motion_extractor import MotionExtractor  # noqa: E402
from mimic_head.modules.spade_generator import SPADEDecoder  # noqa: E402
from mimic_head.modules.stitching_retargeting_network import StitchingRetargetingNetwork  # noqa: E402
from mimic_head.modules.warping_network import WarpingNetwork  # noqa: E402
from mimic_head.utils import camera  # noqa: E402

__all__ = [
    "REDUCED_CONFIGS",
    "AppearanceFeatureExtractor",
    "MotionExtractor",
    "SPADEDecoder",
    "StitchingRetargetingNetwork",
    "WarpingNetwork",
    "camera",
    "official_configs",
    "randomize_",
]

# Small F/W/G from environment.md §7 (the full-size F→W→G chain costs ~10 s/frame on CPU). Same code paths as
# the official sizes: 2 down blocks, 16-deep volume, occlusion map, 2× pixel-shuffle output.
REDUCED_CONFIGS = {
    "appearance_feature_extractor_params": dict(
        image_channel=3,
        block_expansion=8,
        num_down_blocks=2,
        max_features=64,
        reshape_channel=4,
        reshape_depth=16,
        num_resblocks=2,
    ),
    "warping_module_params": dict(
        num_kp=21,
        block_expansion=8,
        max_features=64,
        num_down_blocks=2,
        reshape_channel=4,
        estimate_occlusion_map=True,
        dense_motion_params=dict(
            block_expansion=8, max_features=64, num_blocks=3, reshape_depth=16, compress=2
        ),
    ),
    "spade_generator_params": dict(upscale=2, block_expansion=8, max_features=64, num_down_blocks=2),
}


def official_configs() -> dict:
    """``model_params`` of the models.yaml shipped with mimic-head (identical to LivePortrait's)."""
    text = importlib.resources.files("mimic_head").joinpath("config/models.yaml").read_text()
    return copy.deepcopy(yaml.safe_load(text)["model_params"])


@torch.no_grad()
def randomize_(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Give every parameter and buffer a random, well-conditioned value; put the module in eval mode.

    BN running variances stay positive; legacy spectral-norm ``u``/``v`` are set by power iteration so that
    σ is the top singular value (as after training), not a random, possibly tiny, number.
    """
    generator = torch.Generator().manual_seed(seed)
    for submodule in module.modules():
        is_norm = "Norm" in type(submodule).__name__  # BatchNorm*, LayerNorm (torch's and ConvNeXt's)
        for name, param in submodule.named_parameters(recurse=False):
            noise = torch.randn(param.shape, generator=generator)
            if is_norm:
                param.copy_(1.0 + 0.1 * noise if name == "weight" else 0.1 * noise)  # gains near 1
            elif param.ndim > 1:
                param.copy_(noise / param[0].numel() ** 0.5)  # unit-variance activations
            else:
                param.copy_(0.1 * noise)  # biases, GRN gamma/beta
    for name, buffer in module.named_buffers():
        if name.endswith("running_mean"):
            buffer.copy_(torch.randn(buffer.shape, generator=generator) * 0.1)
        elif name.endswith("running_var"):
            buffer.copy_(torch.rand(buffer.shape, generator=generator) * 0.5 + 0.75)
        elif name.endswith("num_batches_tracked"):
            buffer.fill_(int(torch.randint(1, 1000, (1,), generator=generator)))
    for submodule in module.modules():
        if hasattr(submodule, "weight_orig"):
            weight_mat = submodule.weight_orig.reshape(submodule.weight_orig.shape[0], -1)
            u = torch.randn(weight_mat.shape[0], generator=generator)
            for _ in range(30):
                v = torch.nn.functional.normalize(weight_mat.t() @ u, dim=0)
                u = torch.nn.functional.normalize(weight_mat @ v, dim=0)
            submodule.weight_u.copy_(u)
            submodule.weight_v.copy_(v)
    return module.eval()
