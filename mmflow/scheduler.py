"""The sampling schedule as a diffusers scheduler component, so a pipeline saves and reloads it.

Flow-matching sampling needs no noise table: a time grid from 0 (noise) to 1 (data), warped by sway sampling,
and an ODE solver. ``generate(..., scheduler=...)`` uses both.
"""

from __future__ import annotations

import torch
from diffusers import SchedulerMixin  # noqa: F401  (diffusers looks this name up in the component's module)
from diffusers.configuration_utils import ConfigMixin, register_to_config

from .flow import SAMPLERS, time_grid


class FlowMatchingScheduler(SchedulerMixin, ConfigMixin):
    """Steps, sway and solver of flow-matching sampling.

    Args:
        num_inference_steps: Solver steps (Euler: one model call each; midpoint: two).
        sway_coefficient: Sway sampling s in t → t + s·(cos(πt/2) − 1 + t); F5-TTS uses −1, 0 is uniform.
        solver: ``"euler"`` or ``"midpoint"``.
    """

    config_name = "scheduler_config.json"
    order = 1

    @register_to_config
    def __init__(self, num_inference_steps: int = 32, sway_coefficient: float = -1.0, solver: str = "euler"):
        if solver not in SAMPLERS:
            raise ValueError(f"unknown solver {solver!r}; choose one of {SAMPLERS}")
        self.set_timesteps(num_inference_steps)

    def set_timesteps(self, num_inference_steps: int, device: torch.device | str | None = None) -> None:
        """Set the time grid (``num_inference_steps + 1`` times from 0 to 1) for the next sampling."""
        self.num_inference_steps = int(num_inference_steps)
        self.timesteps = time_grid(self.num_inference_steps, self.config.sway_coefficient, device)

    @property
    def model_calls(self) -> int:
        """Model evaluations per sampling (before classifier-free guidance doubles the batch)."""
        return self.num_inference_steps * (2 if self.config.solver == "midpoint" else 1)
