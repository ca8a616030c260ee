"""Test utilities for mmflow and its plugins: tiny two-stream models, batches, random weights."""

from __future__ import annotations

import torch

from mmflow import MMDiT, StreamBatch


def tiny_config(schedule="half", depth_a=4, depth_b=4, policy="jamflow", backend="auto", mask_padding=True):
    def backbone(depth):
        return {"dim": 32, "depth": depth, "heads": 2, "dim_head": 16, "ff_mult": 2, "conv_pos_kernel": 5,
                "conv_pos_groups": 4}

    mask = None
    if policy == "jamflow":
        mask = {"preset": "local_global", "global_stream": "fast", "local_stream": "slow", "window_seconds": "0.2"}
    return {
        "streams": {
            "fast": {"frame_rate": "50", "channels": 3, "backbone": "dit", "backbone_config": backbone(depth_a)},
            "slow": {"frame_rate": "15", "channels": 2, "cond_channels": 1, "backbone": "dit",
                     "backbone_config": backbone(depth_b)},
        },
        "joint_schedule": schedule,
        "mask_policy": mask,
        "attention_backend": backend,
        "mask_padding": mask_padding,
    }


def randomize(model: torch.nn.Module, std: float = 0.1, seed: int = 0) -> torch.nn.Module:
    """Give every parameter random values (zero-initialised AdaLN/output layers would hide bugs)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * std)
    return model.eval()


def tiny_model(**kwargs) -> MMDiT:
    return randomize(MMDiT(**tiny_config(**kwargs)))


def tiny_batches(batch=2, seconds=(1.0, 0.6), given_fraction=0.3, seed=0) -> dict[str, StreamBatch]:
    """Clips of the given durations (padded to the longest), the first ``given_fraction`` of each given."""
    g = torch.Generator().manual_seed(seed)
    rates, channels = {"fast": 50, "slow": 15}, {"fast": 3, "slow": 2}
    out = {}
    for name, rate in rates.items():
        lengths = [round(s * rate) for s in seconds[:batch]]
        n = max(lengths)
        latent = torch.randn(batch, n, channels[name], generator=g)
        given = torch.arange(n)[None, :] < torch.tensor([round(given_fraction * n_) for n_ in lengths])[:, None]
        cond = torch.randn(batch, n, 1, generator=g) if name == "slow" else None
        out[name] = StreamBatch.from_lengths(latent, lengths, given=given, cond=cond)
    return out
