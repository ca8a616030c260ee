"""Conditional flow matching across streams: the path, the inpainting loss, guidance and ODE samplers.

Conventions follow F5-TTS: noise at t = 0, data at t = 1, the linear path x_t = (1 − t)·x0 + t·x1 with
target velocity x1 − x0. Given frames (``StreamBatch.given``) are context: the loss ignores them and the
sampler puts them back unchanged at the end.

The pieces are separate on purpose: the model maps streams to velocities; ``GuidedVelocity`` turns a model
into a guided velocity function (batched cond/uncond); ``integrate`` is a plain ODE loop over any velocity
function.

Shape letters: ``b`` batch, ``n`` frames, ``c`` channels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from .streams import StreamBatch

Streams = dict[str, torch.Tensor]
VelocityFn = Callable[[Streams, torch.Tensor], Streams]
SAMPLERS = ("euler", "midpoint")


# ------------------------------------------------------------------------------------------------ training


def interpolate(x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Point on the linear path at time ``t`` ``(b,)`` and the target velocity."""
    tt = t.view(-1, *([1] * (x1.ndim - 1))).to(x1.dtype)
    return (1 - tt) * x0 + tt * x1, x1 - x0


def masked_mse(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the frames where ``weight`` ``(b, n)`` is True (0 with no such frame)."""
    frames = weight.to(pred.dtype).unsqueeze(-1)
    count = frames.sum() * pred.shape[-1]
    return ((pred - target) ** 2 * frames).sum() / count.clamp(min=1)


def random_span_mask(
    lengths: torch.Tensor, num_frames: int, fraction: tuple[float, float] = (0.7, 1.0), generator=None
) -> torch.Tensor:
    """``(b, n)`` bool, True on one random span per sample covering ``fraction`` of its valid length.

    F5-TTS trains on such spans: the span is generated, the rest of the sample is the given context.
    """
    b = lengths.shape[0]
    low, high = fraction
    if not 0 < low <= high <= 1:
        raise ValueError(f"span fraction must satisfy 0 < low <= high <= 1, got {fraction}")
    frac = torch.rand(b, generator=generator) * (high - low) + low
    span = (frac * lengths.cpu().float()).round().long().clamp(min=1)
    start = (torch.rand(b, generator=generator) * (lengths.cpu() - span + 1).float()).floor().long()
    index = torch.arange(num_frames)[None, :]
    mask = (index >= start[:, None]) & (index < (start + span)[:, None])
    return mask.to(lengths.device)


@dataclass
class FlowLoss:
    total: torch.Tensor
    per_stream: dict[str, torch.Tensor]


@dataclass
class FlowMatchingObjective:
    """The inpainting CFM objective over all streams of a model.

    Args:
        condition_dropout: Per stream, the probability that a sample's conditions for that stream are hidden
            (classifier-free guidance training); missing streams are never dropped.
        stream_weights: Per stream loss weight (default 1).
    """

    condition_dropout: dict[str, float] = field(default_factory=dict)
    stream_weights: dict[str, float] = field(default_factory=dict)

    def __call__(self, model, batches: Mapping[str, StreamBatch], generator: torch.Generator | None = None) -> FlowLoss:
        first = next(iter(batches.values()))
        b, device = first.batch_size, first.latent.device
        t = torch.rand(b, generator=generator).to(device)
        noisy, targets, drop = {}, {}, {}
        for name, batch in batches.items():
            x0 = torch.randn(batch.latent.shape, generator=generator).to(device, batch.latent.dtype)
            noisy[name], targets[name] = interpolate(x0, batch.latent, t)
            p = self.condition_dropout.get(name, 0.0)
            drop[name] = (torch.rand(b, generator=generator) < p).to(device)
        pred = model(noisy, t, batches, drop=drop)
        per_stream = {name: masked_mse(pred[name], targets[name], batches[name].generated) for name in batches}
        total = sum(self.stream_weights.get(name, 1.0) * loss for name, loss in per_stream.items())
        return FlowLoss(total=total, per_stream=per_stream)


# ------------------------------------------------------------------------------------------------ sampling


def time_grid(steps: int, sway: float = 0.0, device=None) -> torch.Tensor:
    """``steps + 1`` times from 0 to 1; sway sampling t → t + s·(cos(πt/2) − 1 + t) (s < 0 crowds early t)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    t = torch.linspace(0, 1, steps + 1, device=device, dtype=torch.float32)
    if sway:
        t = t + sway * (torch.cos(math.pi / 2 * t) - 1 + t)
    return t


StepCallback = Callable[[int, torch.Tensor, Streams], Streams]


def integrate(
    velocity: VelocityFn, x: Streams, grid: torch.Tensor, method: str = "euler", progress: bool = False,
    callback: StepCallback | None = None,
) -> Streams:
    """Integrate dx/dt = velocity(x, t) along ``grid`` with Euler or the explicit midpoint rule.

    ``callback(i, t, x)``, when given, runs after step ``i`` (which started at time ``t = grid[i]``) and returns
    the state the next step starts from (diffusers' ``callback_on_step_end``)."""
    if method not in SAMPLERS:
        raise ValueError(f"unknown sampler {method!r}; choose one of {SAMPLERS}")
    x = dict(x)
    for i in tqdm(range(len(grid) - 1), desc="sampling", disable=not progress):
        t, dt = grid[i], grid[i + 1] - grid[i]
        v = velocity(x, t)
        if method == "midpoint":
            half = {n: x[n] + v[n] * (dt / 2) for n in x}
            v = velocity(half, t + dt / 2)
        x = {n: x[n] + v[n] * dt for n in x}
        if callback is not None:
            x = callback(i, t, x)
    return x


@dataclass
class Guidance:
    """Classifier-free guidance per stream: v = v_cond + scale·(v_cond − v_uncond).

    Args:
        scales: Per stream guidance scale (missing streams: 0, i.e. no guidance).
        drop: Streams whose conditions are hidden in the unconditional pass (default: all streams).
        joint_view: Per stream joint view in the unconditional pass (False: that stream ignores the others,
            JAM-Flow's guidance variant); missing streams keep their joint view.
    """

    scales: dict[str, float] = field(default_factory=dict)
    drop: tuple[str, ...] | None = None
    joint_view: dict[str, bool] = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return any(scale != 0 for scale in self.scales.values())


class GuidedVelocity:
    """A velocity function for ``integrate``: the model with guidance, cond and uncond in one batch."""

    def __init__(
        self,
        model,
        batches: Mapping[str, StreamBatch],
        guidance: Guidance | None = None,
        joint_view: Mapping[str, bool] | bool = True,
        absent: Sequence[str] = (),
    ):
        self.model, self.guidance = model, guidance or Guidance()
        self.batches = dict(batches)
        names = list(batches)
        b = next(iter(batches.values())).batch_size
        device = next(iter(batches.values())).latent.device
        unknown = sorted((set(self.guidance.scales) | set(self.guidance.joint_view)) - set(names))
        if unknown:
            raise KeyError(f"guidance names unknown stream(s) {unknown}; streams are {names}")
        base_view = {n: joint_view if isinstance(joint_view, bool) else joint_view.get(n, True) for n in names}
        on = torch.ones(b, dtype=torch.bool, device=device)
        off = torch.zeros(b, dtype=torch.bool, device=device)
        if self.guidance.enabled:
            dropped = set(names if self.guidance.drop is None else self.guidance.drop)
            self.batches = {n: batch.repeat(2) for n, batch in batches.items()}
            self.drop = {n: torch.cat([off, on if n in dropped else off]) for n in names}
            uncond_view = {n: base_view[n] and self.guidance.joint_view.get(n, True) for n in names}
            self.view = {n: torch.cat([on if base_view[n] else off, on if uncond_view[n] else off]) for n in names}
        else:
            self.drop, self.view = None, {n: on if base_view[n] else off for n in names}
        # step-invariant work (masks, rotary tables, encoded conditions) once for the whole integration
        if hasattr(model, "plan"):
            self.plan = model.plan(self.batches, self.drop, self.view, absent=tuple(absent))
        elif absent:
            raise ValueError(f"absent streams {list(absent)} need a model with `plan` (an MMDiT)")
        else:
            self.plan = None

    def _plan_kwargs(self) -> dict:
        return {} if self.plan is None else {"plan": self.plan}

    def __call__(self, x: Streams, t: torch.Tensor) -> Streams:
        if not self.guidance.enabled:
            b = next(iter(x.values())).shape[0]
            return self.model(x, t.expand(b), self.batches, joint_view=self.view, **self._plan_kwargs())
        doubled = {n: torch.cat([v, v]) for n, v in x.items()}
        b2 = next(iter(doubled.values())).shape[0]
        v = self.model(doubled, t.expand(b2), self.batches, drop=self.drop, joint_view=self.view, **self._plan_kwargs())
        out = {}
        for name, both in v.items():
            cond, uncond = both.chunk(2)
            scale = self.guidance.scales.get(name, 0.0)
            out[name] = cond + scale * (cond - uncond) if scale else cond
        return out


def seeded_noise(seed: int, shapes: Sequence[tuple[int, ...]]) -> list[torch.Tensor]:
    """One sample's noise: a standard normal tensor per shape, drawn in order on the CPU from one generator seeded
    with ``seed`` (the draws ``sample_noise`` makes for a sample with that seed)."""
    generator = torch.Generator().manual_seed(int(seed))
    return [torch.randn(*shape, generator=generator) for shape in shapes]


def sample_noise(
    batches: Mapping[str, StreamBatch],
    generator: torch.Generator | None = None,
    seeds: list[int] | None = None,
) -> Streams:
    """Standard normal noise shaped like each stream's latent, drawn on the CPU in stream order (reproducible).

    With ``seeds`` (one per sample), each sample's noise comes from its own generator and covers only its valid
    frames (zeros on padding), so a sample gets the same noise alone as in any batch.
    """
    if seeds is None:
        return {
            name: torch.randn(batch.latent.shape, generator=generator).to(batch.latent.device, batch.latent.dtype)
            for name, batch in batches.items()
        }
    first = next(iter(batches.values()))
    if len(seeds) != first.batch_size:
        raise ValueError(f"seeds must give one seed per sample ({first.batch_size}), got {len(seeds)}")
    rows = {name: torch.zeros(batch.latent.shape) for name, batch in batches.items()}
    for i, seed in enumerate(seeds):
        shapes = [(int(batch.lengths[i]), batch.latent.shape[-1]) for batch in batches.values()]
        for name, noise in zip(batches, seeded_noise(seed, shapes), strict=True):
            rows[name][i, : noise.shape[0]] = noise
    return {name: rows[name].to(batch.latent.device, batch.latent.dtype) for name, batch in batches.items()}


@torch.no_grad()
def generate(
    model,
    batches: Mapping[str, StreamBatch],
    steps: int = 32,
    sway: float = -1.0,
    method: str = "euler",
    guidance: Guidance | None = None,
    generator: torch.Generator | None = None,
    noise: Streams | None = None,
    joint_view: Mapping[str, bool] | bool = True,
    progress: bool = False,
    seeds: list[int] | None = None,
    scheduler=None,
    absent: Sequence[str] = (),
    callback: StepCallback | None = None,
) -> Streams:
    """Sample every stream; given frames come back exactly as given, padding frames as zeros.

    ``joint_view=False`` (or False for some streams) runs the model with those streams' joint view off, i.e.
    as if the joint schedule were switched off for their queries. ``seeds`` (one per sample) makes each
    sample's result independent of the batch it is in (with a model that masks padding). A
    ``FlowMatchingScheduler`` (``mmflow.scheduler``), when given, supplies the grid and solver instead of
    ``steps``, ``sway`` and ``method``. ``absent`` streams (a task that leaves them out) are not computed and
    come back as given. ``callback`` runs after every solver step (``integrate``).
    """
    x0 = sample_noise(batches, generator, seeds) if noise is None else dict(noise)
    device = next(iter(batches.values())).latent.device
    if scheduler is not None:
        grid, method = scheduler.grid.to(device), scheduler.config.solver
    else:
        grid = time_grid(steps, sway, device=device)
    x1 = integrate(GuidedVelocity(model, batches, guidance, joint_view, absent), x0, grid, method, progress, callback)
    out = {}
    for name, batch in batches.items():
        if name in absent:
            out[name] = batch.latent.masked_fill(~batch.valid.unsqueeze(-1), 0.0)
            continue
        result = torch.where(batch.given.unsqueeze(-1), batch.latent, x1[name])
        out[name] = result.masked_fill(~batch.valid.unsqueeze(-1), 0.0)
    return out
