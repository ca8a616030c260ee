"""The sampling schedule as a diffusers scheduler: a pipeline saves and reloads it, and a diffusers-style loop
(``for t in scheduler.timesteps: v = model(x, t); x = scheduler.step(v, t, x).prev_sample``) samples with it.

Flow-matching sampling needs no noise table: a grid of flow times from 0 (noise) to 1 (data), warped by sway
sampling, and an ODE solver. ``generate(..., scheduler=...)`` integrates along ``grid`` itself; ``step`` gives
the same result one model call at a time.

Time conventions (see docs/scheduler.md): ``timesteps`` and the ``timestep`` of ``step`` are mmflow flow times t
(0 = noise, 1 = data), what ``MMDiT`` takes. ``sigmas`` are diffusers' noise levels, σ = 1 − t, as in
``FlowMatchEulerDiscreteScheduler`` (whose ``timesteps`` are σ·1000 and whose model predicts noise − data, the
negative of mmflow's velocity).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from diffusers import SchedulerMixin  # noqa: F401  (diffusers looks this name up in the component's module)
from diffusers.configuration_utils import ConfigMixin, FrozenDict, register_to_config
from diffusers.utils import BaseOutput

from .flow import SAMPLERS, interpolate, time_grid

# F5-TTS's empirically pruned step sampling (EPSS, f5_tts/model/utils.py, get_epss_timesteps): for these
# step counts its grid is these multiples of 1/32 instead of a uniform one; sway is applied afterwards.
EPSS_DENOMINATOR = 32
EPSS_GRIDS: dict[int, tuple[int, ...]] = {
    5: (0, 2, 4, 8, 16, 32),
    6: (0, 2, 4, 6, 8, 16, 32),
    7: (0, 2, 4, 6, 8, 16, 24, 32),
    10: (0, 2, 4, 6, 8, 12, 16, 20, 24, 28, 32),
    12: (0, 2, 4, 6, 8, 10, 12, 14, 16, 20, 24, 28, 32),
    16: (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28, 32),
}

Sample = torch.Tensor | Mapping[str, torch.Tensor]


@dataclass
class FlowMatchingSchedulerOutput(BaseOutput):
    """What ``step`` returns: the sample the next model call takes (a tensor or a dict of stream tensors)."""

    prev_sample: Sample


def _map(function, *samples: Sample) -> Sample:
    """``function`` on tensors, or per stream on dicts of tensors (mmflow models take and return such dicts)."""
    if isinstance(samples[0], Mapping):
        return {name: function(*(s[name] for s in samples)) for name in samples[0]}
    return function(*samples)


def _sway(t: torch.Tensor, coefficient: float) -> torch.Tensor:
    """Sway sampling as F5-TTS writes it (``CFM.sample``), so its grids come out bit for bit."""
    return t + coefficient * (torch.cos(math.pi / 2 * t) - 1 + t) if coefficient else t


def epss_grid(steps: int, sway: float = 0.0, device=None) -> torch.Tensor:
    """F5-TTS's grid for ``steps``: EPSS where it defines one, else uniform; then sway."""
    if steps not in EPSS_GRIDS:
        return time_grid(steps, sway, device)
    base = (1 / EPSS_DENOMINATOR) * torch.tensor(EPSS_GRIDS[steps], device=device, dtype=torch.float32)
    return _sway(base, sway)


class FlowMatchingScheduler(SchedulerMixin, ConfigMixin):
    """Steps, sway and solver of flow-matching sampling, with diffusers' scheduler interface.

    Args:
        num_inference_steps: Solver steps (Euler: one model call each; midpoint: two).
        sway_coefficient: Sway sampling s in t → t + s·(cos(πt/2) − 1 + t); F5-TTS uses −1, 0 is uniform.
        solver: ``"euler"`` (order 1) or ``"midpoint"`` (order 2: ``timesteps`` holds each step's start and
            midpoint, and ``step`` alternates between the two stages, as diffusers' Heun scheduler does).
        use_epss: For the step counts F5-TTS prunes (5, 6, 7, 10, 12, 16), start from its EPSS grid instead of
            a uniform one (F5-TTS's default). Off by default: it would change what saved models sample.
        sigmas: A custom grid in diffusers' convention (noise levels, one per step, decreasing, in (0, 1]; the
            terminal 0 is implied), used as given (no sway, no EPSS). Written by ``set_timesteps(sigmas=...)``
            so that a saved scheduler samples what it sampled before saving.
    """

    config_name = "scheduler_config.json"
    init_noise_sigma = 1.0  # diffusers pipelines scale initial noise by it: flow matching starts from N(0, I)

    @register_to_config
    def __init__(
        self,
        num_inference_steps: int = 32,
        sway_coefficient: float = -1.0,
        solver: str = "euler",
        use_epss: bool = False,
        sigmas: list[float] | None = None,
    ):
        if solver not in SAMPLERS:
            raise ValueError(f"unknown solver {solver!r}; choose one of {SAMPLERS}")
        self._begin_index: int | None = None
        if sigmas is not None:
            self.set_timesteps(sigmas=sigmas)
        else:
            self.set_timesteps(num_inference_steps)

    # ------------------------------------------------------------------------------------------ loading

    @classmethod
    def from_config(cls, config=None, return_unused_kwargs=False, **kwargs):
        """diffusers' ``from_config``, made strict: a config of another scheduler (or with keys this one does not
        know) raises instead of loading as the defaults."""
        if isinstance(config, Mapping):
            foreign = config.get("_class_name")
            known = set(inspect.signature(cls.__init__).parameters) - {"self"}
            unknown = sorted(k for k in config if not k.startswith("_") and k not in known)
            if (foreign is not None and foreign != cls.__name__) or unknown:
                what = f"a {foreign} config" if foreign else f"a config with keys {unknown}"
                raise ValueError(
                    f"FlowMatchingScheduler cannot load {what}: it has no equivalent settings, and loading it as "
                    f"the defaults would sample something else. FlowMatchEulerDiscreteScheduler's grid is "
                    f"σ = linspace(1, 1/num_train_timesteps, N) (then shifted), mmflow's is t = 1 − σ from 0 to 1: "
                    f"to sample its grid here, call scheduler.set_timesteps(sigmas=other.sigmas[:-1]) after "
                    f"other.set_timesteps(N); for plain uniform Euler steps use "
                    f"FlowMatchingScheduler(sway_coefficient=0.0, solver='euler'). Known keys: {sorted(known)}"
                )
        return super().from_config(config, return_unused_kwargs=return_unused_kwargs, **kwargs)

    # ------------------------------------------------------------------------------------------ the grid

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: torch.device | str | None = None,
        sigmas: Sequence[float] | torch.Tensor | None = None,
    ) -> None:
        """Set the grid for the next sampling, and record it in ``config`` (so a saved scheduler keeps it).

        Args:
            num_inference_steps: Solver steps; the grid is uniform (or EPSS, with ``use_epss``), then swayed.
            device: Where ``timesteps``, ``sigmas`` and ``grid`` live.
            sigmas: Instead, a custom grid in diffusers' convention (see the class docstring); its length is
                the step count.
        """
        if sigmas is not None:
            sigmas = self._checked_sigmas(sigmas, num_inference_steps)
            steps, recorded = len(sigmas), sigmas.tolist()  # float32 values, exact as JSON floats
            sigmas = torch.cat([sigmas, sigmas.new_zeros(1)]).to(device)  # as given, and the terminal 0
            grid = torch.cat([1 - sigmas[:-1], sigmas.new_ones(1)])
        else:
            if num_inference_steps is None or int(num_inference_steps) < 1:
                raise ValueError(f"num_inference_steps must be an integer >= 1, got {num_inference_steps!r}")
            steps, recorded = int(num_inference_steps), None
            sway = self.config.sway_coefficient
            grid = epss_grid(steps, sway, device) if self.config.use_epss else time_grid(steps, sway, device)
            sigmas = 1 - grid
        self.register_to_config(num_inference_steps=steps, sigmas=recorded)
        # every key is now stated; diffusers' list of defaulted keys would make a reloaded config differ
        self._internal_dict = FrozenDict({k: v for k, v in self.config.items() if k != "_use_default_values"})
        self.num_inference_steps = steps
        self.grid = grid
        self.sigmas = sigmas
        if self.config.solver == "midpoint":  # each step's start, then its midpoint (t + dt/2, as integrate does)
            middle = grid[:-1] + (grid[1:] - grid[:-1]) / 2
            self.timesteps = torch.stack([grid[:-1], middle], dim=1).flatten()
        else:
            self.timesteps = grid[:-1].clone()
        self._step_index: int | None = None
        self._stage_start: Sample | None = None

    @staticmethod
    def _checked_sigmas(sigmas, num_inference_steps) -> torch.Tensor:
        """``sigmas`` as a float32 CPU tensor, checked."""
        sigmas = torch.as_tensor(sigmas, dtype=torch.float32).flatten().cpu()
        if num_inference_steps is not None and int(num_inference_steps) != len(sigmas):
            raise ValueError(f"num_inference_steps={num_inference_steps} but {len(sigmas)} sigmas were given; "
                             f"give one sigma per step, or leave num_inference_steps out")
        if len(sigmas) < 1 or not bool(((sigmas > 0) & (sigmas <= 1)).all()) or bool((sigmas[1:] >= sigmas[:-1]).any()):
            raise ValueError(
                f"sigmas must be strictly decreasing noise levels in (0, 1], one per step, without the terminal 0 "
                f"(it is appended); got {sigmas.tolist()}"
            )
        return sigmas

    @property
    def order(self) -> int:
        """Model calls per solver step (diffusers pipelines count progress with it)."""
        return 2 if self.config.solver == "midpoint" else 1

    @property
    def model_calls(self) -> int:
        """Model evaluations per sampling (before classifier-free guidance doubles the batch)."""
        return self.num_inference_steps * self.order

    @property
    def step_index(self) -> int | None:
        """Index in ``timesteps`` of the next ``step`` call (None before the first)."""
        return self._step_index

    @property
    def begin_index(self) -> int | None:
        return self._begin_index

    def set_begin_index(self, begin_index: int = 0) -> None:
        """Start the next loop at ``timesteps[begin_index]`` (diffusers' image-to-image pattern)."""
        if begin_index % self.order:
            raise ValueError(f"begin_index {begin_index} falls inside a midpoint step; use a multiple of {self.order}")
        self._begin_index = begin_index

    @property
    def state_in_first_order(self) -> bool:
        """True when the next ``step`` starts a solver step (always with Euler), as in diffusers' Heun scheduler."""
        return self._stage_start is None

    # ------------------------------------------------------------------------------------------ stepping

    def scale_model_input(self, sample: Sample, timestep=None) -> Sample:
        """Unchanged: flow-matching models take the sample as it is (diffusers pipelines call this)."""
        return sample

    def step(
        self,
        model_output: Sample,
        timestep: float | torch.Tensor,
        sample: Sample,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
    ) -> FlowMatchingSchedulerOutput | tuple[Sample]:
        """Advance ``sample`` with the velocity ``model_output`` the model gave at ``timestep``.

        Euler: x + v·dt. Midpoint: the first call returns the half-step state x + v·dt/2 (the model's next
        input, at ``timesteps[i + 1]``), the second x + v_mid·dt from the state the step started at. The
        arithmetic is ``mmflow.flow.integrate``'s, so a loop over ``timesteps`` equals ``generate``. Tensors or
        dicts of stream tensors. ``generator`` is accepted for diffusers compatibility; both solvers are
        deterministic.
        """
        index = self._index_for(timestep)
        solver_step = index // self.order
        dt = self.grid[solver_step + 1] - self.grid[solver_step]
        if self.order == 2 and self._stage_start is None:
            self._stage_start = sample
            prev = _map(lambda x, v: x + v * (dt / 2), sample, model_output)
        else:
            start = sample if self._stage_start is None else self._stage_start
            self._stage_start = None
            prev = _map(lambda x, v: x + v * dt, start, model_output)
        self._step_index = index + 1
        return FlowMatchingSchedulerOutput(prev_sample=prev) if return_dict else (prev,)

    def _index_for(self, timestep) -> int:
        """The index of this call in ``timesteps``, checked against ``timestep`` so a loop out of step fails."""
        if self._step_index is None:
            index = self._begin_index
            if index is None:
                matches = (self.timesteps == torch.as_tensor(timestep).flatten()[0].to(self.timesteps)).nonzero()
                if len(matches) == 0:
                    raise ValueError(f"timestep {float(torch.as_tensor(timestep).flatten()[0])} is not in this "
                                     f"scheduler's timesteps; pass the values of scheduler.timesteps")
                index = int(matches[0])
        else:
            index = self._step_index
        if index >= len(self.timesteps):
            raise ValueError(f"all {len(self.timesteps)} timesteps are done; call set_timesteps to sample again")
        expected = self.timesteps[index]
        given = torch.as_tensor(timestep, device=expected.device, dtype=expected.dtype).flatten()
        if not bool((given == expected).all()):
            raise ValueError(f"step {index} expects timestep {float(expected)}, got {given.tolist()}: loop over "
                             f"scheduler.timesteps in order, and call set_timesteps before a new loop")
        return index

    # ------------------------------------------------------------------------------------------ noising

    def scale_noise(self, sample: Sample, timestep: float | torch.Tensor, noise: Sample) -> Sample:
        """The point at flow time ``timestep`` on the path from ``noise`` to the data ``sample``:
        (1 − t)·noise + t·sample, i.e. σ·noise + (1 − σ)·sample as ``FlowMatchEulerDiscreteScheduler`` has it."""
        # the time in each sample's own dtype: a float64 sample is not noised at a float32-rounded time
        def noised(x1, x0):
            return interpolate(x0, x1, torch.as_tensor(timestep, dtype=x1.dtype, device=x1.device))[0]

        return _map(noised, sample, noise)

    def add_noise(self, original_samples: Sample, noise: Sample, timesteps: torch.Tensor) -> Sample:
        """``scale_noise`` with diffusers' training-loop argument order (``timesteps``: one per sample)."""
        return self.scale_noise(original_samples, timesteps, noise)
